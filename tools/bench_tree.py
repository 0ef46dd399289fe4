#!/usr/bin/env python3
# Benchmark: rendering and validating the GitOps tree, each against a bare baseline run alongside.
"""Time the GitOps tree's render (playbooks/gitops.yml) and its validation (tools/validate_tree.py).

Baselines, measured in the same run on the same machine:
- render: ansible-playbook running an empty play on localhost with the same inventory (what
  Ansible costs to start and load the inventory);
- validation: a bare loop of `kustomize build` over every kustomization directory of the
  rendered tree, one after the other (the least any validation of the tree has to do).
The ratios show what the role and the checks add. Run: `make bench-tree` (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORY = REPO / "inventory" / "example"
TARGET_SECONDS = 30.0


def timed(action: Callable[[], None], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def command(cmd: list[str], cwd: Path = REPO, ok: tuple[int, ...] = (0,)) -> Callable[[], None]:
    """Run cmd; exit codes outside `ok` stop the benchmark (an invalid tree still times validation)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}

    def go() -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
        if proc.returncode not in ok:
            sys.exit(f"bench_tree: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}")

    return go


def render(playbook: str, dest: Path) -> Callable[[], None]:
    """A fresh render each time: the role's first write of the tree is what users wait for."""
    run = command([playbook, "playbooks/gitops.yml", "-i", str(INVENTORY), *tree_vars(dest)])

    def go() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        run()

    return go


def tree_vars(dest: Path) -> list[str]:
    # The vendored downloads come from the mirror's gitops group, as in `make validate-tree`.
    mirror = f"file://{cache_root() / 'mirror' / 'files'}"
    # gitops_push as JSON: a key=value extra var is a string, which the inventory validation refuses for a bool.
    push = '{"gitops_push": false}'
    return ["-e", f"gitops_repo_local_path={dest}", "-e", push, "-e", f"download_mirror_url={mirror}"]


def cache_root() -> Path:
    return Path(os.environ.get("HOMELAB_CACHE") or Path.home() / ".cache" / "homelab-bootstrap")


def kustomize_loop(kustomize: str, tree: Path) -> Callable[[], None]:
    dirs = sorted({p.parent for p in tree.rglob("kustomization.yaml") if ".git" not in p.parts})
    runs = [command([kustomize, "build", str(d)], cwd=tree) for d in dirs if "kind: Component" not in kdoc(d)]

    def go() -> None:
        for run in runs:
            run()

    return go


def kdoc(directory: Path) -> str:
    return (directory / "kustomization.yaml").read_text(encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    playbook = str(bindir / "ansible-playbook")
    tools_bin = cache_root() / "tools" / "bin"
    kustomize = shutil.which("kustomize", path=f"{tools_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if not kustomize:
        sys.exit("bench_tree: kustomize not found: run `make validate-tools`")
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as tmp:
        tree = Path(tmp) / "tree"
        empty_play = Path(tmp) / "empty.yml"
        empty_play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n", encoding="utf-8")
        baseline_render = timed(command([playbook, str(empty_play), "-i", str(INVENTORY)]), args.runs)
        render_time = timed(render(playbook, tree), args.runs)
        validate = command([sys.executable, str(REPO / "tools" / "validate_tree.py"), str(tree)], ok=(0, 1))
        validate()  # warm the schema and chart caches: the figure is for a warm machine
        baseline_validate = timed(kustomize_loop(kustomize, tree), args.runs)
        validate_time = timed(validate, args.runs)
    print(f"| GitOps tree of inventory/example | median of {args.runs} |")
    print("|---|---|")
    print(f"| baseline: empty play, same inventory | {baseline_render:.2f} s |")
    print(f"| render (playbooks/gitops.yml, fresh tree) | {render_time:.2f} s |")
    print(f"| render ratio | {render_time / baseline_render:.2f}x |")
    print(f"| baseline: bare `kustomize build` loop over the tree | {baseline_validate:.2f} s |")
    print(f"| validation (tools/validate_tree.py, warm caches) | {validate_time:.2f} s |")
    print(f"| validation ratio | {validate_time / baseline_validate:.2f}x |")
    print(f"| validation target | < {TARGET_SECONDS:.0f} s |")
    return 0 if validate_time < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
