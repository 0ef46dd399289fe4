# Table-driven tests of the kubeadm_state module: files on a node in, state and leftovers out.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.homelab.bootstrap.plugins.modules import kubeadm_state

KUBEADM_CONTROL_PLANE = [
    "etc/kubernetes/admin.conf",
    "etc/kubernetes/super-admin.conf",
    "etc/kubernetes/kubelet.conf",
    "etc/kubernetes/manifests/kube-apiserver.yaml",
    "etc/kubernetes/manifests/kube-controller-manager.yaml",
    "etc/kubernetes/manifests/kube-scheduler.yaml",
    "etc/kubernetes/manifests/etcd.yaml",
    "etc/kubernetes/pki/ca.crt",
    "var/lib/kubelet/config.yaml",
    "var/lib/kubelet/kubeadm-flags.env",
    "var/lib/etcd/member/",
]
KUBEADM_WORKER = [
    "etc/kubernetes/kubelet.conf",
    "etc/kubernetes/pki/ca.crt",
    "var/lib/kubelet/config.yaml",
    "var/lib/kubelet/kubeadm-flags.env",
]

# Each case: the files on the node (a trailing / makes a directory), the state expected, and the
# leftovers reported.
CASES: list[dict[str, Any]] = [
    {"id": "fresh node", "files": [], "state": "absent", "leftovers": []},
    {
        "id": "files kubeadm does not own",
        "files": ["etc/kubernetes/kubeadm-config.yaml", "etc/kubernetes/patches/kubeletconfiguration+merge.yaml"],
        "state": "absent",
        "leftovers": [],
    },
    {
        "id": "first control plane after init",
        "files": KUBEADM_CONTROL_PLANE,
        "state": "control_plane",
        "leftovers": sorted(set(kubeadm_state.WATCHED) - {"bootstrap_kubelet_conf"}),
    },
    {
        "id": "joined control plane (no super-admin.conf)",
        "files": [f for f in KUBEADM_CONTROL_PLANE if "super-admin" not in f],
        "state": "control_plane",
        "leftovers": sorted(set(kubeadm_state.WATCHED) - {"super_admin_conf", "bootstrap_kubelet_conf"}),
    },
    {
        "id": "worker",
        "files": KUBEADM_WORKER,
        "state": "worker",
        "leftovers": ["kubelet_conf", "kubelet_config", "kubelet_flags", "pki_ca"],
    },
    {
        "id": "worker still holding its bootstrap kubeconfig",
        "files": [*KUBEADM_WORKER, "etc/kubernetes/bootstrap-kubelet.conf"],
        "state": "worker",
        "leftovers": ["bootstrap_kubelet_conf", "kubelet_conf", "kubelet_config", "kubelet_flags", "pki_ca"],
    },
    {
        "id": "join interrupted before TLS bootstrap",
        "files": ["etc/kubernetes/bootstrap-kubelet.conf", "etc/kubernetes/pki/ca.crt", "var/lib/kubelet/config.yaml"],
        "state": "partial",
        "leftovers": ["bootstrap_kubelet_conf", "kubelet_config", "pki_ca"],
    },
    {
        "id": "control-plane join interrupted after the static pods were written",
        "files": [
            "etc/kubernetes/manifests/kube-apiserver.yaml",
            "etc/kubernetes/manifests/etcd.yaml",
            "etc/kubernetes/pki/ca.crt",
            "var/lib/etcd/member/",
        ],
        "state": "partial",
        "leftovers": ["apiserver_manifest", "etcd_manifest", "etcd_member", "pki_ca"],
    },
    {
        "id": "control plane that lost its kubelet.conf",
        "files": [f for f in KUBEADM_CONTROL_PLANE if not f.endswith("kubelet.conf")],
        "state": "partial",
        "leftovers": sorted(set(kubeadm_state.WATCHED) - {"kubelet_conf", "bootstrap_kubelet_conf"}),
    },
    {
        "id": "kubelet.conf beside a stale etcd data directory",
        "files": [*KUBEADM_WORKER, "var/lib/etcd/member/"],
        "state": "partial",
        "leftovers": ["etcd_member", "kubelet_conf", "kubelet_config", "kubelet_flags", "pki_ca"],
    },
    {
        "id": "only the etcd data a reset leaves behind",
        "files": ["var/lib/etcd/member/"],
        "state": "partial",
        "leftovers": ["etcd_member"],
    },
]


def make_node(root: Path, files: list[str]) -> dict[str, str]:
    """Create the files under root; return the module's directory options for that root."""
    for rel in files:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    return {
        "kubernetes_dir": str(root / "etc/kubernetes"),
        "kubelet_dir": str(root / "var/lib/kubelet"),
        "etcd_data_dir": str(root / "var/lib/etcd"),
    }


def run_module(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the module's main() as Ansible would and return its JSON result."""
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        kubeadm_state.main()
    assert exit_info.value.code == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_state(case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(make_node(tmp_path, case["files"]), capsys)
    assert result["state"] == case["state"]
    assert result["leftovers"] == case["leftovers"]
    assert result["changed"] is False
    assert set(result["files"]) == set(kubeadm_state.WATCHED)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_check_mode_reports_the_same_and_changes_nothing(
    case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = make_node(tmp_path, case["files"])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_module({**args, "_ansible_check_mode": True}, capsys)
    assert (result["state"], result["changed"]) == (case["state"], False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_second_run_gives_the_same_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = make_node(tmp_path, KUBEADM_WORKER)
    assert run_module(args, capsys) == run_module(args, capsys)


def test_defaults_are_kubeadm_paths(capsys: pytest.CaptureFixture[str]) -> None:
    """Without options the module looks where kubeadm writes (on this test machine: nothing)."""
    result = run_module({}, capsys)
    assert result["changed"] is False
    assert result["state"] in {"absent", "partial", "worker", "control_plane"}


@pytest.mark.parametrize(
    ("present", "state"),
    [
        (set(), "absent"),
        ({"admin_conf", "kubelet_conf", "apiserver_manifest"}, "control_plane"),
        ({"kubelet_conf"}, "worker"),
        ({"kubelet_conf", "super_admin_conf"}, "partial"),
        ({"admin_conf", "apiserver_manifest"}, "partial"),
        ({"pki_ca"}, "partial"),
    ],
)
def test_classify(present: set[str], state: str) -> None:
    assert kubeadm_state.classify(present) == state
