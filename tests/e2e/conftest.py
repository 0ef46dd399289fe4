# The lab cluster for the end-to-end tests: brought up once per session with `lab/lab.py up`.
from __future__ import annotations

import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CACHE = Path(os.environ.get("HOMELAB_CACHE", Path.home() / ".cache" / "homelab-bootstrap"))
LOGS = CACHE / "lab" / "logs"
LAB_SETTINGS = yaml.safe_load((REPO / "inventory/lab/group_vars/all/cluster.yml").read_text())
VIP = LAB_SETTINGS["cluster_api_vip"]
VIP_PORT = LAB_SETTINGS["cluster_api_port"]
# The external-secrets bootstrap token the argocd phase writes into the cluster, from the
# reference in inventory/lab (env:HOMELAB_SECRET_STORE_TOKEN): random per session, so that the
# tests find it in the cluster and nowhere else.
SECRET_STORE_TOKEN = secrets.token_urlsafe(24)
RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class LabRun:
    """One `lab.py up` run: its output and per-host changed/failed counts from the play recaps."""

    output: str
    returncode: int
    seconds: float
    changed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


def lab_up(name: str, *args: str) -> LabRun:
    """Run lab.py up, keep its log under $HOMELAB_CACHE/lab/logs, sum the recaps per host."""
    LOGS.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "lab" / "lab.py"), "up", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env={**os.environ, "HOMELAB_SECRET_STORE_TOKEN": SECRET_STORE_TOKEN},
    )
    run = LabRun(proc.stdout + proc.stderr, proc.returncode, time.monotonic() - start)
    (LOGS / f"{name}.log").write_text(run.output)
    # lab.py runs create.yml (localhost) then site.yml; only site.yml's recap describes the nodes.
    site_output = run.output.split("site.yml", 1)[-1]
    for host, _ok, changed, _unreachable, failed in RECAP_RE.findall(site_output):
        run.changed[host] = run.changed.get(host, 0) + int(changed)
        run.failed[host] = run.failed.get(host, 0) + int(failed)
    return run


def ansible_playbook(*args: str, log: str, env: dict[str, str] | None = None) -> str:
    """One ansible-playbook run from the repository, as `make` runs it; its output kept as
    $HOMELAB_CACHE/lab/logs/<log>.log (the secret scans read that directory). Fails on a
    non-zero exit."""
    LOGS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})},
    )
    output = proc.stdout + proc.stderr
    (LOGS / f"{log}.log").write_text(output)
    assert proc.returncode == 0, output[-6000:]
    return output


def node_exec(node: str, *argv: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", "exec", node, *argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{node}: {' '.join(argv)} failed: {proc.stderr}")
    return proc.stdout


def kubectl(*args: str, node: str = "cp1") -> str:
    return node_exec(node, "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", *args)


def https_ok(url: str, timeout: float = 3) -> bool:
    """True when url answers 200 ok (the API's /readyz is readable without credentials)."""
    context = ssl.create_default_context()
    # Reachability only: the API's certificate is checked by kubectl in the other tests; here
    # the client has no copy of the lab's CA at hand while the VIP moves.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def first_run() -> LabRun:
    """Fresh lab nodes (removing any left over), then `lab.py up`: the full site.yml."""
    subprocess.run([sys.executable, str(REPO / "lab" / "lab.py"), "down"], check=True, cwd=REPO)
    run = lab_up("first-run")
    assert run.returncode == 0, run.output[-6000:]
    return run
