#!/usr/bin/env python3
# The built-in lab: node containers reached over SSH, an offline mirror, and site.yml run against them.
"""Bring the lab cluster up or down, or show how to reach it.

`up` builds what is missing (docker engine, node images, mirror), starts the mirror, creates
the node containers with the one container definition (lab/node-container.yml via
lab/playbooks/create.yml), gives them SSH access with a lab key, writes the inventory
(inventory/lab/hosts.yml; the settings are in inventory/lab/group_vars) and runs the
unchanged site.yml against them, as against bare metal. Running it again converges the same
cluster. `down` removes the node containers (the mirror and caches stay).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

LAB_DIR = Path(__file__).resolve().parent
REPO = LAB_DIR.parent
INVENTORY = REPO / "inventory" / "lab"
HOSTS_FILE = INVENTORY / "hosts.yml"
CACHE = Path(os.environ.get("HOMELAB_CACHE", Path.home() / ".cache" / "homelab-bootstrap"))
STATE = CACHE / "lab"
SSH_KEY = STATE / "ssh" / "id_ed25519"
VENV_BIN = REPO / ".venv" / "bin"
# Addresses from the static node range of lab/node-container.yml.
CONTROL_PLANE_BASE = ipaddress.ip_address("172.30.0.11")
WORKER_BASE = ipaddress.ip_address("172.30.0.21")
MAX_PER_ROLE = 9


@dataclass(frozen=True)
class Node:
    """One lab node container."""

    name: str
    address: str
    group: str
    image: str


def log(message: str) -> None:
    print(f"lab: {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it; fail loudly with the command line."""
    log("$ " + shlex.join(cmd))
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def topology(control_planes: int, workers: int, image: str) -> list[Node]:
    if control_planes not in (1, 3, 5, 7):
        raise SystemExit("lab: --control-planes must be 1, 3, 5 or 7 (etcd quorum)")
    if not 0 <= workers <= MAX_PER_ROLE:
        raise SystemExit(f"lab: --workers must be between 0 and {MAX_PER_ROLE}")
    nodes = [Node(f"cp{i + 1}", str(CONTROL_PLANE_BASE + i), "control_plane", image) for i in range(control_planes)]
    nodes += [Node(f"worker{i + 1}", str(WORKER_BASE + i), "workers", image) for i in range(workers)]
    return nodes


def inventory_text(nodes: list[Node]) -> str:
    """The lab's hosts file: groups and addresses only; settings live in inventory/lab/group_vars."""
    lines = [
        "---",
        "# Written by lab/lab.py for the current lab topology; edit the lab's settings in group_vars/.",
        "all:",
        "  children:",
        "    k8s_cluster:",
        "      children:",
    ]
    for group in ("control_plane", "workers"):
        lines += [f"        {group}:", "          hosts:"]
        members = [n for n in nodes if n.group == group]
        lines += [f"            {n.name}:\n              ansible_host: {n.address}" for n in members]
        if not members:
            lines[-1] = "          hosts: {}"
    return "\n".join(lines) + "\n"


def ensure_prerequisites(skip_build: bool) -> None:
    run([sys.executable, str(LAB_DIR / "docker_engine.py")])
    run([sys.executable, str(LAB_DIR / "node_images.py")])
    if not skip_build:
        run([str(VENV_BIN / "python"), str(LAB_DIR / "mirror" / "build.py")])
    run([sys.executable, str(LAB_DIR / "mirror_server.py"), "start"])


def ensure_ssh_key() -> str:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "homelab-lab", "-f", str(SSH_KEY)])
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def platforms(nodes: list[Node]) -> list[dict[str, object]]:
    return [{"name": n.name, "image": n.image, "ipv4_address": n.address, "groups": [n.group]} for n in nodes]


def create_nodes(nodes: list[Node]) -> None:
    # The API's DNS name resolves on the nodes as it would through the user's DNS (docker rewrites
    # /etc/hosts on every container start, so it is declared with the container).
    settings = yaml.safe_load((INVENTORY / "group_vars" / "all" / "cluster.yml").read_text())
    etc_hosts = {settings["cluster_api_dns_name"]: settings["cluster_api_vip"]}
    extra = json.dumps({"lab_platforms": platforms(nodes), "lab_etc_hosts": etc_hosts})
    run([str(VENV_BIN / "ansible-playbook"), str(LAB_DIR / "playbooks" / "create.yml"), "-e", extra], cwd=REPO)


# Each container gets its own SSH host keys on first boot (the image must not share them) and
# the lab's public key for root, like a freshly installed machine with your key on it.
SSH_SETUP = r"""
set -eu
if [ ! -e /etc/ssh/.lab-host-keys ]; then
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -A >/dev/null
  touch /etc/ssh/.lab-host-keys
fi
install -d -m 0700 /root/.ssh
printf '%s\n' "$1" > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
systemctl enable --now ssh >/dev/null 2>&1 || systemctl enable --now sshd >/dev/null 2>&1
systemctl restart ssh 2>/dev/null || systemctl restart sshd
"""


def give_ssh_access(nodes: list[Node], public_key: str) -> None:
    for node in nodes:
        run(["docker", "exec", node.name, "sh", "-c", SSH_SETUP, "lab-ssh", public_key], stdout=subprocess.DEVNULL)


def wait_for_ssh(nodes: list[Node], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            probe = subprocess.run(
                ["ssh", *ssh_options(), f"root@{node.address}", "true"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"lab: {node.name} ({node.address}) does not answer SSH: {probe.stderr.strip()}")
            time.sleep(1)


def ssh_options() -> list[str]:
    return [
        "-i",
        str(SSH_KEY),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
    ]


def run_site(extra_args: list[str]) -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    run([str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), "site.yml", *extra_args], cwd=REPO, env=env)


def existing_nodes() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=io.homelab.lab=node", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(name for name in out.stdout.split() if name.startswith(("cp", "worker")))


def versions() -> dict[str, str]:
    return yaml.safe_load((REPO / "roles/cluster_defaults/defaults/main/versions.yml").read_text())


def summary(nodes: list[Node]) -> None:
    print()
    print("Lab cluster")
    print(f"  inventory: {INVENTORY.relative_to(REPO)} (hosts.yml written for this topology)")
    for node in nodes:
        print(f"  {node.name:<9} {node.group:<14} {node.address}")
    settings = yaml.safe_load((INVENTORY / "group_vars" / "all" / "cluster.yml").read_text())
    print(f"  API endpoint: https://{settings['cluster_api_vip']}:{settings['cluster_api_port']} (VIP)")
    kubectl = CACHE / "mirror/files/dl.k8s.io/release" / f"v{versions()['kubernetes_version']}/bin/linux/amd64/kubectl"
    print(f"  kubeconfig:   {STATE / 'admin.conf'}")
    print(f"  kubectl:      KUBECONFIG={STATE / 'admin.conf'} {kubectl} get nodes")
    print(f"  shell on a node: docker exec -it {nodes[0].name} bash   (or: ssh -i {SSH_KEY} root@{nodes[0].address})")
    print("  rerun: make lab   remove: make lab-down")


def cmd_up(args: argparse.Namespace) -> None:
    nodes = topology(args.control_planes, args.workers, args.image)
    started = time.monotonic()
    ensure_prerequisites(args.skip_build)
    public_key = ensure_ssh_key()
    create_nodes(nodes)
    give_ssh_access(nodes, public_key)
    wait_for_ssh(nodes)
    HOSTS_FILE.write_text(inventory_text(nodes))
    if not args.no_site:
        run_site(args.ansible_args)
    summary(nodes)
    log(f"up in {time.monotonic() - started:.0f} s")


def cmd_down(_: argparse.Namespace) -> None:
    names = existing_nodes()
    if names:
        extra = json.dumps({"lab_platforms": [{"name": n} for n in names]})
        run([str(VENV_BIN / "ansible-playbook"), str(LAB_DIR / "playbooks" / "destroy.yml"), "-e", extra], cwd=REPO)
    HOSTS_FILE.unlink(missing_ok=True)
    log("node containers removed; the mirror and caches stay (python3 lab/mirror_server.py stop)")


def cmd_status(_: argparse.Namespace) -> None:
    run(["docker", "ps", "-a", "--filter", "label=io.homelab.lab", "--format", "table {{.Names}}\t{{.Status}}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create or converge the lab cluster")
    up.add_argument("--control-planes", type=int, default=int(os.environ.get("LAB_CONTROL_PLANES", "3")))
    up.add_argument("--workers", type=int, default=int(os.environ.get("LAB_WORKERS", "2")))
    up.add_argument("--image", default=os.environ.get("LAB_IMAGE", "homelab-node:debian12"))
    up.add_argument("--skip-build", action="store_true", help="use the mirror as it is")
    up.add_argument("--no-site", action="store_true", help="create the nodes but do not run site.yml")
    up.add_argument("ansible_args", nargs="*", help="extra ansible-playbook arguments (after --)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="remove the node containers").set_defaults(func=cmd_down)
    sub.add_parser("status", help="list the lab containers").set_defaults(func=cmd_status)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
