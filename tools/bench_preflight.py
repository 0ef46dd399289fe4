#!/usr/bin/env python3
# Benchmark: inventory validation time for a generated large inventory, against a baseline.
"""Time `playbooks/preflight.yml` on a generated N-node inventory.

The baseline, measured in the same run, is ansible-playbook running an empty play on
localhost with the same inventory: what Ansible itself costs to start and load the
inventory. The ratio shows what validation adds. Run: `make bench-preflight`.
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
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def generate(dest: Path, nodes: int) -> Path:
    """Copy the example inventory and replace its hosts with `nodes` hosts (3 control planes)."""
    shutil.copytree(REPO / "inventory" / "example", dest)
    control = {f"cp{i}": {"ansible_host": f"10.10.0.{10 + i}"} for i in range(1, 4)}
    workers = {
        f"worker{i}": {"ansible_host": f"10.10.{1 + i // 250}.{i % 250 + 1}"} for i in range(nodes - len(control))
    }
    hosts = {
        "all": {
            "children": {
                "k8s_cluster": {"children": {"control_plane": {"hosts": control}, "workers": {"hosts": workers}}}
            }
        }
    }
    (dest / "hosts.yml").write_text(yaml.safe_dump(hosts))
    overrides = {
        "cluster_node_cidr": "10.10.0.0/16",
        "cluster_api_vip": "10.10.0.5",
        "cluster_pod_cidr": "10.128.0.0/12",
        "metallb_pool": ["10.10.250.0/24"],
    }
    (dest / "group_vars" / "all" / "zz_bench.yml").write_text(yaml.safe_dump(overrides))
    return dest


def timed(cmd: list[str], runs: int) -> float:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    with tempfile.TemporaryDirectory() as tmp:
        inventory = generate(Path(tmp) / "inventory", args.nodes)
        empty_play = Path(tmp) / "empty.yml"
        empty_play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
        baseline = timed([playbook, str(empty_play), "-i", str(inventory)], args.runs)
        preflight = timed([playbook, str(REPO / "playbooks" / "preflight.yml"), "-i", str(inventory)], args.runs)
    print(f"| inventory | {args.nodes} nodes (median of {args.runs}) |")
    print("|---|---|")
    print(f"| baseline: empty play, same inventory | {baseline:.2f} s |")
    print(f"| preflight.yml | {preflight:.2f} s |")
    print(f"| ratio | {preflight / baseline:.2f}x |")
    print(f"| validation alone | {preflight - baseline:.2f} s (target: whole run < 5 s) |")
    return 0 if preflight < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
