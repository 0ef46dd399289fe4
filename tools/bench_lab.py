#!/usr/bin/env python3
# Benchmark: wall times of site.yml on the lab against a plain kubeadm script on the same nodes (issue 6).
"""Time site.yml on the lab and, on fresh containers of the same topology, a bare kubeadm script.

One run measures, with ansible-playbook called directly (not `lab.py up`, whose image and
mirror checks are not site.yml's):
  (a) site.yml on fresh nodes (3 control planes + 2 workers),
  (b) a second, no-op site.yml run, once ArgoCD has synced every Application (the wait for
      that is reported, untimed: a rerun meets a settled cluster, not ArgoCD's first syncs),
  (c) adding one worker by rerunning site.yml, at 5, 6 and 7 nodes (growth must stay flat),
and then, on freshly created containers of the same 3 + 2 topology,
  (d) what an expert would type by hand with the same artefacts: the same mirror downloads,
      the configuration files the roles rendered on the converged nodes (copied, so the
      baseline measures commands, not templating), keepalived and HAProxy from apt, then
      `kubeadm init`, control-plane joins one at a time and worker joins in parallel, over SSH;
      then the bootstrap site.yml also does: `helm upgrade --install` of the Cilium chart with
      the tree's values and a wait for its rollout, ArgoCD's install manifest, its repository
      Secret, the AppProjects and the root Application with kubectl, and the GitOps tree (as (a)
      wrote it) committed and pushed to a fresh repository.
It prints a table with the ratios against the targets and saves the figures as JSON under
$HOMELAB_CACHE/bench/. It removes the lab node containers at the start and at the end.
Run: `make bench` (.venv/bin/python tools/bench_lab.py).
"""

from __future__ import annotations

import argparse
import configparser
import functools
import importlib.util
import io
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
LAB = REPO / "lab" / "lab.py"
INVENTORY = REPO / "inventory" / "lab"
DEFAULTS = REPO / "roles" / "cluster_defaults" / "defaults" / "main"
CACHE = Path(os.environ.get("HOMELAB_CACHE", Path.home() / ".cache" / "homelab-bootstrap"))
# The GitOps working copy of the lab (inventory/lab: gitops_repo_local_path).
LAB_TREE = CACHE / "lab" / "gitops"
CONTROL_PLANES = {"cp1": "172.30.0.11", "cp2": "172.30.0.12", "cp3": "172.30.0.13"}
WORKER_BASE = 21  # worker<N> is 172.30.0.<20 + N> (lab.py's static range)
RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", re.M)
# Targets from issue 6: (a) within 1.5x of (d); (b) < 30 s; (c) < 90 s and flat.
TARGET_FULL_RATIO = 1.5
TARGET_NOOP_SECONDS = 30.0
TARGET_ADD_SECONDS = 90.0
# "Not growing with the cluster": the add at the largest size within 20 % of the add at 5 nodes.
TARGET_GROWTH = 1.2

# Files the roles render on a node that the baseline copies instead of templating them.
NODE_FILES = [
    "etc/containerd/config.toml",
    "etc/containerd/certs.d",
    "etc/crictl.yaml",
    "usr/local/lib/systemd/system/containerd.service",
    "usr/local/lib/systemd/system/kubelet.service",
    "usr/local/lib/systemd/system/kubelet.service.d",
    "etc/default/kubelet",
    "etc/sysctl.d/90-kubernetes.conf",
    "etc/modules-load.d/kubernetes.conf",
    "etc/kubernetes/patches",
]
CONTROL_PLANE_FILES = ["etc/keepalived/keepalived.conf", "etc/haproxy/haproxy.cfg"]
# The first control plane's kubeadm configuration (Init + Cluster + Kubelet documents).
INIT_CONFIG = "etc/kubernetes/kubeadm-config.yaml"
# node_os's Debian packages (roles/node_os/vars/Debian.yml) plus curl for the downloads.
NODE_PACKAGES = "ca-certificates conntrack ethtool gzip iproute2 iptables kmod mount socat tar util-linux curl"
CONTROL_PLANE_PACKAGES = "keepalived haproxy"
# Sysctls the lab only writes to the file (inventory/lab/group_vars: not namespaced by the kernel).
SYSCTL_FILE_ONLY = ("fs.inotify.",)


@dataclass
class Run:
    """One timed step: wall seconds, exit code and, for playbook runs, the per-host recap."""

    name: str
    seconds: float
    returncode: int
    nodes_before: int = 0
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    # CPU seconds of ansible-playbook and every process it waited for (its forks, ssh, modules
    # run locally): the automation's own work, which the lab's load does not inflate much.
    controller_cpu_seconds: float | None = None
    # Share of all the host's cores busy during the run (the nodes and the controller share them).
    host_busy: float | None = None


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Sum the PLAY RECAP lines of an ansible-playbook output per host (site.yml imports several plays)."""
    recap: dict[str, dict[str, int]] = {}
    for host, *counts in RECAP_RE.findall(output):
        entry = recap.setdefault(host, dict.fromkeys(("ok", "changed", "unreachable", "failed", "skipped"), 0))
        for key, value in zip(("ok", "changed", "unreachable", "failed", "skipped"), counts, strict=True):
            entry[key] += int(value)
    return recap


def download_urls(downloads_yml: str, versions: dict[str, Any], mirror: str, arch: str) -> dict[str, str]:
    """The *_download_url values of cluster_defaults' downloads.yml for a mirror and architecture."""
    data = yaml.safe_load(downloads_yml)
    context = {**versions, "node_arch": arch, "download_url_prefix": mirror.rstrip("/") + "/"}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # URLs, not HTML
    return {
        key.removesuffix("_download_url"): env.from_string(value).render(context)
        for key, value in data.items()
        if key.endswith("_download_url")
    }


def parse_join_secrets(init_output: str) -> tuple[str, str, str]:
    """Token, CA certificate hash and certificate key from `kubeadm init --upload-certs` output."""

    def find(flag: str) -> str:
        match = re.search(rf"--{flag}\s+(\S+)", init_output)
        if not match:
            raise ValueError(f"kubeadm init printed no --{flag}")
        return match.group(1)

    return find("token"), find("discovery-token-ca-cert-hash"), find("certificate-key")


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(rows: Iterable[tuple[str, str, str, str]]) -> str:
    """A plain text table: measure, seconds, ratio/target, verdict."""
    header = ("measure", "seconds", "ratio / target", "ok")
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def worker_address(index: int) -> str:
    return f"172.30.0.{WORKER_BASE - 1 + index}"


def ssh_command(address: str, remote: str) -> list[str]:
    return ["ssh", *lab_cli().ssh_options(), f"root@{address}", remote]


@functools.cache
def lab_cli() -> Any:
    """lab/lab.py as a module: the lab's SSH options live there once."""
    spec = importlib.util.spec_from_file_location("lab_cli", REPO / "lab" / "lab.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["lab_cli"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def ssh(address: str, remote: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(ssh_command(address, remote), input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"ssh {address} {remote[:80]!r} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}"
            f"{proc.stdout.decode()[-2000:]}"
        )
    return proc.stdout


def lab(*args: str) -> None:
    """lab.py, outside the timings (node creation and teardown)."""
    log("$ lab.py " + " ".join(args))
    subprocess.run([sys.executable, str(LAB), *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def settle(timeout: float = 900.0) -> float:
    """Wait until ArgoCD has synced every Application once (Synced and Healthy); return the seconds.

    A user's rerun meets a settled cluster, not one whose first syncs are still busy on every core:
    (b) and (c) are measured on that. The wait is outside every timing and reported on its own.
    """
    start = time.monotonic()
    kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf"
    query = f"{kubectl} -n argocd get applications.argoproj.io -o json"
    while True:
        apps = json.loads(ssh(CONTROL_PLANES["cp1"], query))["items"]
        pending = [
            a["metadata"]["name"]
            for a in apps
            if (a.get("status") or {}).get("sync", {}).get("status") != "Synced"
            or (a.get("status") or {}).get("health", {}).get("status") != "Healthy"
        ]
        if apps and not pending:
            seconds = time.monotonic() - start
            log(f"settled: {len(apps)} Applications Synced and Healthy after {seconds:.0f} s")
            return seconds
        if time.monotonic() - start > timeout:
            raise SystemExit(f"bench: ArgoCD did not sync {', '.join(pending) or 'any Application'} in {timeout:.0f} s")
        time.sleep(5)


def host_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all the host's cores so far, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def create_nodes(workers: int) -> None:
    lab("up", "--skip-build", "--no-site", "--control-planes", "3", "--workers", str(workers))


def forget_cached_facts(hosts: Iterable[str]) -> None:
    """A user's first run has no cached facts of its new nodes; earlier labs left some under the same names."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    facts_dir = Path(os.path.expanduser(cfg.get("defaults", "fact_caching_connection")))
    for host in hosts:
        (facts_dir / host).unlink(missing_ok=True)


def site(name: str, logs: Path, nodes_before: int = 0) -> Run:
    """Time one ansible-playbook site.yml run against the lab inventory; fail the benchmark on failure."""
    # profile_tasks only adds per-task times to the log (where the seconds go); it costs next to nothing.
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "25",
    }
    log(f"{name}: ansible-playbook -i inventory/lab site.yml")
    cpu_before, (busy_before, total_before) = children_cpu_seconds(), host_cpu_jiffies()
    start = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), "site.yml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    busy_after, total_after = host_cpu_jiffies()
    (logs / f"{name}.log").write_text(proc.stdout + proc.stderr)
    run = Run(name, seconds, proc.returncode, nodes_before, parse_recap(proc.stdout))
    run.controller_cpu_seconds = children_cpu_seconds() - cpu_before
    run.host_busy = (busy_after - busy_before) / max(total_after - total_before, 1)
    log(
        f"{name}: {seconds:.1f} s, rc={proc.returncode}, controller CPU {run.controller_cpu_seconds:.1f} s, "
        f"host {run.host_busy:.0%} busy, changed={ {h: r['changed'] for h, r in run.recap.items()} }"
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: {name} failed; see {logs / (name + '.log')}")
    return run


def capture_rendered_files(nodes: dict[str, str]) -> dict[str, bytes]:
    """A tar of the role-rendered files of each converged node (whichever of them exist)."""
    captured: dict[str, bytes] = {}
    for name, address in nodes.items():
        paths = NODE_FILES + (CONTROL_PLANE_FILES if name in CONTROL_PLANES else [])
        if name == "cp1":
            paths = [*paths, INIT_CONFIG]
        present = " ".join(shlex.quote(p) for p in paths)
        captured[name] = ssh(address, f'cd / && tar -cf - $(for p in {present}; do [ -e "$p" ] && echo "$p"; done)')
        with tarfile.open(fileobj=io.BytesIO(captured[name])) as archive:
            log(f"captured {len(archive.getnames())} entries from {name}")
    return captured


def prepare_script(urls: dict[str, str], control_plane: bool) -> str:
    """The node preparation an expert would run: packages, downloads with checksums, install, services."""
    runc_sums = urls["runc"].rsplit("/", 1)[0] + "/runc.sha256sum"
    packages = NODE_PACKAGES + (" " + CONTROL_PLANE_PACKAGES if control_plane else "")
    k8s = urls["kubernetes"]
    fetches = [
        (urls["containerd"], urls["containerd"] + ".sha256sum", "containerd.tgz"),
        (urls["runc"], runc_sums, "runc"),
        (urls["cni_plugins"], urls["cni_plugins"] + ".sha256", "cni.tgz"),
        (urls["crictl"], urls["crictl"] + ".sha256", "crictl.tgz"),
        *((f"{k8s}/{b}", f"{k8s}/{b}.sha256", b) for b in ("kubeadm", "kubelet", "kubectl")),
    ]
    lines = [
        "set -euo pipefail",
        "export DEBIAN_FRONTEND=noninteractive",
        "apt-get update -q >/dev/null",
        f"apt-get install -y -q --no-install-recommends {packages} >/dev/null",
        "tar -C / -xf /root/rendered.tar",
        # The checksum file holds `<sum>  <name>` lines or a bare sum.
        'fetch() { curl -fsSLo "$3" "$1"; '
        'sum=$(curl -fsSL "$2" | awk -v f="${1##*/}" \'NF==1 || $2==f || $2=="*"f {print $1; exit}\'); '
        'echo "$sum  $3" | sha256sum -c --quiet; }',
        "mkdir -p /opt/bench && cd /opt/bench",
        *(f"fetch {shlex.quote(u)} {shlex.quote(s)} {f}" for u, s, f in fetches),
        "tar -C /usr/local -xzf containerd.tgz",
        "install -m 0755 runc /usr/local/sbin/runc",
        "mkdir -p /opt/cni/bin && tar -C /opt/cni/bin -xzf cni.tgz",
        "tar -C /usr/local/bin -xzf crictl.tgz",
        "install -m 0755 kubeadm kubelet kubectl /usr/local/bin/",
        "modprobe overlay 2>/dev/null || true; modprobe br_netfilter 2>/dev/null || true",
        f"grep -v -E '^({'|'.join(re.escape(p) for p in SYSCTL_FILE_ONLY)})' /etc/sysctl.d/90-kubernetes.conf"
        " | sysctl -q -p /dev/stdin",
        "swapoff -a",
        "systemctl daemon-reload",
        "systemctl enable --now containerd",
        "systemctl enable kubelet",
    ]
    if control_plane:
        lines.append("systemctl restart haproxy keepalived")
    return "\n".join(lines) + "\n"


def join_config(name: str, address: str, *, token: str, ca_hash: str, cert_key: str | None, api: str) -> str:
    """The JoinConfiguration an expert writes per node (same settings the kubeadm role uses)."""
    document: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "nodeRegistration": {
            "name": name,
            "criSocket": "unix:///run/containerd/containerd.sock",
            "kubeletExtraArgs": [{"name": "node-ip", "value": address}],
            "ignorePreflightErrors": ["SystemVerification"],
        },
        "discovery": {"bootstrapToken": {"apiServerEndpoint": api, "token": token, "caCertHashes": [ca_hash]}},
        "patches": {"directory": "/etc/kubernetes/patches"},
    }
    if cert_key is not None:
        document["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
            "certificateKey": cert_key,
        }
    return yaml.safe_dump(document, sort_keys=False)


def run_local(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {(proc.stderr + proc.stdout)[-3000:]}")


# install.yaml's workloads but Dex, which the lab leaves out.
ARGOCD_WORKLOADS = (
    "statefulset/argocd-application-controller",
    "deployment/argocd-applicationset-controller",
    "deployment/argocd-notifications-controller",
    "deployment/argocd-redis",
    "deployment/argocd-repo-server",
    "deployment/argocd-server",
)


def bootstrap_baseline(cp1: str, tree: Path, versions: dict[str, Any], settings: dict[str, Any], work: Path) -> None:
    """The bootstrap phases by hand: Cilium with helm, ArgoCD and its hand-off with kubectl, the tree into Git."""
    files = CACHE / "mirror" / "files"
    chart = files / "helm.cilium.io" / f"cilium-{versions['cilium_version']}.tgz"
    argocd = f"raw.githubusercontent.com/argoproj/argo-cd/v{versions['argocd_version']}"
    manifest = files / argocd / "manifests" / "install.yaml"
    kubeconfig = work / "admin.conf"
    endpoint = f"https://{settings['cluster_api_vip']}:{settings['cluster_api_port']}"
    admin = re.sub(r"server: \S+", f"server: {endpoint}", ssh(cp1, "cat /etc/kubernetes/admin.conf").decode())
    kubeconfig.write_text(admin)
    kubeconfig.chmod(0o600)
    values = tree / "cluster/platform/base/networking/cilium/values.yaml"
    helm = CACHE / "tools" / "bin" / "helm"
    run_local([str(helm), "upgrade", "--install", "cilium", str(chart), "--namespace", "kube-system",
               "--kubeconfig", str(kubeconfig), "--values", str(values)])  # fmt: skip
    kubectl = "kubectl --kubeconfig=/etc/kubernetes/admin.conf"
    # site.yml waits for Cilium's rollout (cilium_wait), so the expert does too.
    ssh(cp1, f"{kubectl} -n kube-system rollout status daemonset/cilium --timeout 600s"
        f" && {kubectl} -n kube-system rollout status deployment/cilium-operator --timeout 600s")  # fmt: skip
    # The lab's ArgoCD has no Dex (inventory/lab: argocd_dex_enabled false): the expert deletes
    # its Deployment and waits for the rest, as site.yml does (argocd_wait).
    ssh(cp1, f"{kubectl} create namespace argocd && {kubectl} apply --server-side -n argocd -f - >/dev/null"
        f" && {kubectl} -n argocd delete deployment argocd-dex-server", manifest.read_bytes())  # fmt: skip
    ssh(cp1, f"{kubectl} wait --for condition=Established --timeout 120s"
        " crd/applications.argoproj.io crd/appprojects.argoproj.io crd/applicationsets.argoproj.io")  # fmt: skip
    ssh(cp1, " && ".join(f"{kubectl} -n argocd rollout status {w} --timeout 600s" for w in ARGOCD_WORKLOADS))
    ssh(cp1, f"{kubectl} -n argocd create secret generic gitops-repo --from-literal=type=git"
        f" --from-literal=url={settings['gitops_repo_url']} --from-literal=username=git --from-file=password=/dev/stdin"
        f" && {kubectl} -n argocd label secret gitops-repo argocd.argoproj.io/secret-type=repository",
        b"bench-password")  # fmt: skip
    projects = sorted((tree / "cluster/platform/gitops/argocd/projects").glob("*.yaml"))
    docs = [p.read_text() for p in projects if p.name != "kustomization.yaml"]
    docs.append((tree / "cluster/bootstrap/root-application/root-app.yaml").read_text())
    ssh(cp1, f"{kubectl} apply -f -", "\n---\n".join(docs).encode())
    repo, remote = work / "gitops", work / "gitops-remote.git"
    run_local(["git", "init", "--quiet", "--bare", "--initial-branch", "main", str(remote)])
    run_local(["cp", "-r", str(tree), str(repo)])
    for cmd in (
        ["git", "init", "--quiet", "--initial-branch", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "--quiet", "-m", "tree"],
        ["git", "push", "--quiet", f"file://{remote}", "main"],
    ):
        run_local(cmd, cwd=repo)


def parallel(func: Callable[[str], Any], names: Iterable[str]) -> list[Any]:
    names = list(names)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(func, names))


def baseline(nodes: dict[str, str], files: dict[str, bytes], tree: Path, logs: Path) -> Run:
    """(d): the bare kubeadm script on fresh containers, timed per phase."""
    versions = yaml.safe_load((DEFAULTS / "versions.yml").read_text())
    settings = yaml.safe_load((INVENTORY / "group_vars" / "all" / "cluster.yml").read_text())
    urls = download_urls((DEFAULTS / "downloads.yml").read_text(), versions, settings["download_mirror_url"], "amd64")
    api = f"{settings['cluster_api_dns_name']}:{settings['cluster_api_port']}"
    workers = [n for n in nodes if n not in CONTROL_PLANES]
    phases: dict[str, float] = {}
    transcript: list[str] = []
    start = time.monotonic()

    def prepare(name: str) -> None:
        # Unpacked after the packages: dpkg stops at a conffile prompt when haproxy.cfg is already there.
        ssh(nodes[name], "cat > /root/rendered.tar", files[name])
        ssh(nodes[name], "bash -c " + shlex.quote(prepare_script(urls, name in CONTROL_PLANES)))

    parallel(prepare, nodes)
    phases["prepare"] = time.monotonic() - start
    log(f"baseline: nodes prepared in {phases['prepare']:.1f} s")

    mark = time.monotonic()
    init_out = ssh(nodes["cp1"], f"kubeadm init --config /{INIT_CONFIG} --upload-certs").decode()
    transcript.append(init_out)
    token, ca_hash, cert_key = parse_join_secrets(init_out)
    phases["init"] = time.monotonic() - mark
    log(f"baseline: kubeadm init in {phases['init']:.1f} s")

    def join(name: str) -> None:
        key = cert_key if name in CONTROL_PLANES else None
        config = join_config(name, nodes[name], token=token, ca_hash=ca_hash, cert_key=key, api=api)
        ssh(nodes[name], "cat > /root/join.yaml && kubeadm join --config /root/join.yaml", config.encode())

    # Stacked etcd grows one member at a time; workers join together.
    mark = time.monotonic()
    for name in ("cp2", "cp3"):
        join(name)
    phases["control_plane_joins"] = time.monotonic() - mark
    log(f"baseline: control-plane joins in {phases['control_plane_joins']:.1f} s")
    mark = time.monotonic()
    parallel(join, workers)
    phases["worker_joins"] = time.monotonic() - mark
    log(f"baseline: worker joins in {phases['worker_joins']:.1f} s")
    mark = time.monotonic()
    work = logs / "baseline-bootstrap"
    work.mkdir()
    bootstrap_baseline(nodes["cp1"], tree, versions, settings, work)
    phases["bootstrap"] = time.monotonic() - mark
    log(f"baseline: Cilium, ArgoCD and the GitOps tree in {phases['bootstrap']:.1f} s")
    seconds = time.monotonic() - start

    registered = ssh(nodes["cp1"], "kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes -o name").decode().split()
    (logs / "baseline.log").write_text("\n".join(transcript) + "\n" + "\n".join(registered) + "\n")
    if len(registered) != len(nodes):
        raise SystemExit(f"bench: the baseline cluster has {registered}, expected {sorted(nodes)}")
    return Run("baseline", seconds, 0, 0, phases=phases)


def cpu_ratio(last: Run, first: Run) -> float | None:
    if last.controller_cpu_seconds is None or not first.controller_cpu_seconds:
        return None
    return last.controller_cpu_seconds / first.controller_cpu_seconds


def cpu_row(run: Run) -> tuple[str, str, str]:
    """Informational: the automation's own CPU time and how busy the shared host was meanwhile."""
    label = f"    {run.name}: controller CPU, host busy"
    if run.controller_cpu_seconds is None or run.host_busy is None:
        return (label, "-", "")
    return (label, f"{run.controller_cpu_seconds:.0f}", f"{run.host_busy:.0%} of {os.cpu_count()} cores")


def report(runs: list[Run], stamp: str, logs: Path, path: Path, total_seconds: float) -> None:
    """Print the table of figures, ratios and targets and save everything as JSON at path."""
    by_name = {run.name: run for run in runs}
    full, noop, base = by_name["full"], by_name["noop"], by_name["baseline"]
    adds = [run for run in runs if run.name.startswith("add-")]
    full_ratio = full.seconds / base.seconds
    growth = adds[-1].seconds / adds[0].seconds if len(adds) > 1 else None
    cpu_growth = cpu_ratio(adds[-1], adds[0]) if len(adds) > 1 else None
    rows = [
        ("(a) site.yml, fresh 3+2", f"{full.seconds:.0f}", f"{full_ratio:.2f}x of (d) / <= {TARGET_FULL_RATIO}x"),
        cpu_row(full),
        ("    ArgoCD's first syncs after (a), untimed", f"{by_name['settle'].seconds:.0f}", ""),
        ("(b) no-op rerun, 5 nodes", f"{noop.seconds:.0f}", f"< {TARGET_NOOP_SECONDS:.0f} s"),
        cpu_row(noop),
        *(
            (f"(c) add worker at {r.nodes_before} nodes", f"{r.seconds:.0f}", f"< {TARGET_ADD_SECONDS:.0f} s")
            for r in adds
        ),
        ("(c) growth last/first", "", f"{fmt_ratio(growth)} / <= {TARGET_GROWTH}x (flat)"),
        *(cpu_row(r) for r in adds),
        ("    (c) growth of the controller's CPU, last/first", "", fmt_ratio(cpu_growth)),
        ("(d) bare kubeadm, 3+2", f"{base.seconds:.0f}", ""),
        *((f"    (d) {k}", f"{v:.0f}", "") for k, v in base.phases.items()),
    ]
    verdicts = {
        0: full_ratio <= TARGET_FULL_RATIO,
        3: noop.seconds < TARGET_NOOP_SECONDS,
        **{5 + i: r.seconds < TARGET_ADD_SECONDS for i, r in enumerate(adds)},
        5 + len(adds): growth is not None and growth <= TARGET_GROWTH,
    }
    text = table(
        (m, s, t, ("yes" if verdicts[i] else "NO") if i in verdicts else "") for i, (m, s, t) in enumerate(rows)
    )
    noop_changed = {h: r["changed"] for h, r in noop.recap.items() if r["changed"]}
    # Adding a worker must change nothing on the hosts that were there before.
    add_changed_elsewhere = {
        r.name: {h: c["changed"] for h, c in r.recap.items() if c["changed"] and h != r.name.removeprefix("add-")}
        for r in adds
    }
    result = {
        "timestamp": stamp,
        "host_cpus": os.cpu_count(),
        "runs": [asdict(run) for run in runs],
        "ratios": {
            "full_over_baseline": full_ratio,
            "add_growth_last_over_first": growth,
            "add_controller_cpu_growth_last_over_first": cpu_growth,
        },
        "noop_changed_hosts": noop_changed,
        "add_changed_other_hosts": add_changed_elsewhere,
        "total_seconds": total_seconds,
        "logs": str(logs),
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(text)
    if noop_changed:
        print(f"note: the no-op rerun changed something on {noop_changed}")
    for name, changed in add_changed_elsewhere.items():
        if changed:
            print(f"note: {name} changed existing hosts too: {changed}")
    print(f"\nsaved {path} (logs in {logs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--grow-to", type=int, default=5, help="add workers one by one up to this many (default 5: 5, 6, 7 nodes)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the baseline cluster up at the end")
    parser.add_argument(
        "--baseline-only",
        type=Path,
        metavar="LOGS_DIR",
        help="only (d), with the rendered files an earlier run saved in LOGS_DIR/rendered (for debugging)",
    )
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = CACHE / "bench"
    logs = out_dir / f"lab-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    path = out_dir / f"lab-{stamp}.json"

    def record(run: Run) -> None:
        """Keep each figure as soon as it exists: a later failure must not lose the earlier ones."""
        runs.append(run)
        partial = {"timestamp": stamp, "partial": True, "runs": [asdict(r) for r in runs], "logs": str(logs)}
        path.write_text(json.dumps(partial, indent=2) + "\n")

    started = time.monotonic()

    lab("down")
    all_hosts = [*CONTROL_PLANES, *(f"worker{i}" for i in range(1, args.grow_to + 1))]
    forget_cached_facts(all_hosts)
    first_nodes = {**CONTROL_PLANES, "worker1": worker_address(1), "worker2": worker_address(2)}
    try:
        if args.baseline_only:
            files = {name: (args.baseline_only / "rendered" / f"{name}.tar").read_bytes() for name in first_nodes}
            tree = args.baseline_only / "rendered" / "gitops"
        else:
            create_nodes(2)
            record(site("full", logs, 5))
            record(Run("settle", settle(), 0))
            record(site("noop", logs, 5))
            files = capture_rendered_files(first_nodes)
            (logs / "rendered").mkdir()
            for name, data in files.items():
                (logs / "rendered" / f"{name}.tar").write_bytes(data)
            # The tree (a) wrote, without its history: the baseline commits it afresh.
            tree = logs / "rendered" / "gitops"
            shutil.copytree(LAB_TREE, tree, ignore=shutil.ignore_patterns(".git"))
            for count in range(3, args.grow_to + 1):
                create_nodes(count)
                record(site(f"add-worker{count}", logs, 3 + count - 1))
            lab("down")
        create_nodes(2)
        record(baseline(first_nodes, files, tree, logs))
    finally:
        # The lab stays down afterwards (also after a failure) unless asked otherwise.
        if not args.keep:
            lab("down")

    if args.baseline_only:
        print(f"(d) {runs[0].seconds:.0f} s, phases {runs[0].phases}; saved {path}")
        return
    report(runs, stamp, logs, path, time.monotonic() - started)


if __name__ == "__main__":
    main()
