# End to end, on the lab: the HA control plane a user gets from `make lab`, checked from outside.
from __future__ import annotations

import json
import re
import stat
import subprocess
import time

import pytest
from kubernetes import client, config

from tests.e2e.conftest import CACHE, LOGS, VIP, VIP_PORT, LabRun, https_ok, kubectl, lab_up, node_exec

CONTROL_PLANES = ["cp1", "cp2", "cp3"]
WORKERS = ["worker1", "worker2"]
ADDRESSES = {"cp1": "172.30.0.11", "cp2": "172.30.0.12", "cp3": "172.30.0.13"}


def nodes() -> dict[str, dict]:
    return {item["metadata"]["name"]: item for item in json.loads(kubectl("get", "nodes", "-o", "json"))["items"]}


def test_site_yml_succeeds_on_fresh_nodes(first_run: LabRun) -> None:
    assert first_run.failed and not any(first_run.failed.values()), first_run.failed
    print(f"\nfull site.yml from fresh nodes (lab.py up): {first_run.seconds:.0f} s")


def test_all_nodes_registered_with_roles(first_run: LabRun) -> None:
    registered = nodes()
    assert sorted(registered) == sorted(CONTROL_PLANES + WORKERS)
    for name in CONTROL_PLANES:
        labels = registered[name]["metadata"]["labels"]
        taints = registered[name]["spec"].get("taints", [])
        assert "node-role.kubernetes.io/control-plane" in labels
        assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in taints
    for name in WORKERS:
        assert "node-role.kubernetes.io/control-plane" not in registered[name]["metadata"]["labels"]
        # Only the automatic taint of a node without a CNI (see test_nodes_wait_for_a_cni).
        taints = {t["key"] for t in registered[name]["spec"].get("taints", [])}
        assert taints <= {"node.kubernetes.io/not-ready"}, taints
    versions = {n["status"]["nodeInfo"]["kubeletVersion"] for n in registered.values()}
    assert versions == {"v1.37.2"}


def test_nodes_wait_for_a_cni(first_run: LabRun) -> None:
    """No CNI runs in the lab yet (the cni phase is a later issue): nodes are NotReady for that reason only."""
    for name, node in nodes().items():
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False", name
        assert "network" in ready["message"].lower() or "cni" in ready["message"].lower(), ready


def test_etcd_has_three_healthy_members(first_run: LabRun) -> None:
    members = json.loads(
        kubectl(
            "-n",
            "kube-system",
            "exec",
            "etcd-cp1",
            "--",
            "etcdctl",
            "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
            "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
            "endpoint",
            "health",
            "--cluster",
            "-w",
            "json",
        )
    )
    assert len(members) == 3, members
    assert all(member["health"] for member in members), members


def test_every_apiserver_and_the_vip_answer(first_run: LabRun) -> None:
    for name, address in ADDRESSES.items():
        assert https_ok(f"https://{address}:6443/readyz"), name
    assert https_ok(f"https://{VIP}:{VIP_PORT}/readyz")


def test_static_pods_running_on_every_control_plane(first_run: LabRun) -> None:
    pods = json.loads(kubectl("-n", "kube-system", "get", "pods", "-o", "json"))["items"]
    for name in CONTROL_PLANES:
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            pod = next(p for p in pods if p["metadata"]["name"] == f"{component}-{name}")
            assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]


def test_user_kubeconfig_reaches_the_api_through_the_vip(first_run: LabRun) -> None:
    path = CACHE / "lab" / "admin.conf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    api = config.new_client_from_config(config_file=str(path))
    assert api.configuration.host == f"https://{VIP}:{VIP_PORT}"
    names = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    assert set(CONTROL_PLANES) <= names


def test_second_run_changes_nothing(first_run: LabRun) -> None:
    rerun = lab_up("second-run", "--skip-build")
    assert rerun.returncode == 0, rerun.output[-6000:]
    print(f"\nno-op rerun (lab.py up --skip-build): {rerun.seconds:.0f} s")
    assert rerun.changed and not any(rerun.changed.values()), rerun.changed


def vip_holder() -> str | None:
    for name in CONTROL_PLANES:
        if f"inet {VIP}/" in node_exec(name, "ip", "-4", "-o", "addr", check=False):
            return name
    return None


def test_vip_moves_when_its_node_stops(first_run: LabRun) -> None:
    holder = vip_holder()
    assert holder, "no control plane holds the VIP"
    survivors = [name for name in CONTROL_PLANES if name != holder]
    start = time.monotonic()
    subprocess.run(["docker", "stop", "--time", "0", holder], check=True, capture_output=True)
    try:
        deadline = start + 60
        while not https_ok(f"https://{VIP}:{VIP_PORT}/readyz", 1):
            assert time.monotonic() < deadline, "the API did not answer on the VIP within 60 s"
            time.sleep(0.2)
        seconds = time.monotonic() - start
        new_holder = next(name for name in survivors if f"inet {VIP}/" in node_exec(name, "ip", "-4", "-o", "addr"))
        print(f"\nVIP failover: {holder} stopped, {new_holder} took the VIP, API answered after {seconds:.1f} s")
    finally:
        subprocess.run(["docker", "start", holder], check=True, capture_output=True)
    # The stopped node comes back as a member: its API server answers and etcd is whole again.
    deadline = time.monotonic() + 300
    while not https_ok(f"https://{ADDRESSES[holder]}:6443/readyz"):
        assert time.monotonic() < deadline, f"{holder}'s API server did not come back after a restart"
        time.sleep(2)
    test_etcd_has_three_healthy_members(first_run)


@pytest.mark.parametrize("new_worker", ["worker3"])
def test_adding_a_worker_changes_nothing_else(first_run: LabRun, new_worker: str) -> None:
    grown = lab_up("add-worker", "--skip-build", "--workers", "3")
    assert grown.returncode == 0, grown.output[-6000:]
    print(f"\nadding one worker by rerun: {grown.seconds:.0f} s")
    assert new_worker in nodes()
    others = {host: n for host, n in grown.changed.items() if host != new_worker}
    assert not any(others.values()), others


# A bootstrap token (kubeadm's [a-z0-9]{6}.[a-z0-9]{16}) or certificate key on a command line.
TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
CERT_KEY_RE = re.compile(r"certificate[-_]key[\"'=:\s]+[0-9a-f]{64}", re.I)


def test_no_join_secret_in_logs_or_config(first_run: LabRun) -> None:
    """Join tokens and certificate keys appear neither in the playbook output nor on disk."""
    for name in ("first-run", "second-run", "add-worker"):
        log = LOGS / f"{name}.log"
        if log.exists():
            text = log.read_text()
            assert not TOKEN_RE.search(text), f"{name}: bootstrap token in the output"
            assert not CERT_KEY_RE.search(text), f"{name}: certificate key in the output"
    for node in CONTROL_PLANES + WORKERS:
        leftovers = node_exec(node, "sh", "-c", "grep -rlE 'token: *[a-z0-9]{6}\\.' /etc/kubernetes || true")
        assert not leftovers.strip(), f"{node}: files with a bootstrap token: {leftovers}"
        journal = node_exec(node, "journalctl", "--no-pager", "-o", "cat")
        assert not TOKEN_RE.search(journal), f"{node}: bootstrap token in the journal"
