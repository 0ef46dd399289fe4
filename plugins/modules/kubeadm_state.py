# Module: report from a node's files whether kubeadm made it a control plane, a worker, or left debris.
"""Observed kubeadm state of one node (read-only)."""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: kubeadm_state
short_description: Report whether this node is a kubeadm control plane, a worker, half-set-up, or untouched
description:
  - Looks at the files C(kubeadm init) and C(kubeadm join) leave on a node and classifies the node.
    It changes nothing, so it runs the same in check mode.
  - C(control_plane) - C(admin.conf), C(kubelet.conf) and the kube-apiserver static pod manifest exist.
  - C(worker) - C(kubelet.conf) exists, and neither C(admin.conf) nor any control-plane manifest does.
  - C(partial) - some of those files exist but neither of the above holds (an interrupted init or
    join, or a reset that did not finish). Such a node must be reset before it can join.
  - C(absent) - none of them exists.
  - Whether a C(control_plane) or C(worker) node is also registered in the cluster is for the caller
    to check (C(kubectl get nodes)); this module sees only the node itself.
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  kubernetes_dir:
    description: kubeadm's configuration directory.
    type: path
    default: /etc/kubernetes
  kubelet_dir:
    description: kubelet's state directory, where kubeadm writes C(config.yaml) and C(kubeadm-flags.env).
    type: path
    default: /var/lib/kubelet
  etcd_data_dir:
    description: Data directory of the stacked etcd member.
    type: path
    default: /var/lib/etcd
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Find out whether this node already belongs to a cluster
  homelab.bootstrap.kubeadm_state:
  register: node_state

- name: Reset a node an interrupted join left behind
  ansible.builtin.command: kubeadm reset --force
  when: node_state.state == 'partial'
  changed_when: true
"""

RETURN = r"""
state:
  description: C(control_plane), C(worker), C(partial) or C(absent).
  returned: always
  type: str
  sample: control_plane
files:
  description: Each file the decision looked at, and whether it exists.
  returned: always
  type: dict
  sample: {admin_conf: true, kubelet_conf: true, apiserver_manifest: true, etcd_manifest: true}
leftovers:
  description: The files that exist, by name; for C(partial) they say what an earlier attempt left.
  returned: always
  type: list
  elements: str
  sample: [pki_ca, kubelet_config]
"""

# Name -> (base directory option, relative path). Names are what `files` and `leftovers` report.
WATCHED: dict[str, tuple[str, str]] = {
    "admin_conf": ("kubernetes_dir", "admin.conf"),
    "super_admin_conf": ("kubernetes_dir", "super-admin.conf"),
    "kubelet_conf": ("kubernetes_dir", "kubelet.conf"),
    "bootstrap_kubelet_conf": ("kubernetes_dir", "bootstrap-kubelet.conf"),
    "apiserver_manifest": ("kubernetes_dir", "manifests/kube-apiserver.yaml"),
    "controller_manager_manifest": ("kubernetes_dir", "manifests/kube-controller-manager.yaml"),
    "scheduler_manifest": ("kubernetes_dir", "manifests/kube-scheduler.yaml"),
    "etcd_manifest": ("kubernetes_dir", "manifests/etcd.yaml"),
    "pki_ca": ("kubernetes_dir", "pki/ca.crt"),
    "kubelet_config": ("kubelet_dir", "config.yaml"),
    "kubelet_flags": ("kubelet_dir", "kubeadm-flags.env"),
    "etcd_member": ("etcd_data_dir", "member"),
}
CONTROL_PLANE_REQUIRED = ("admin_conf", "kubelet_conf", "apiserver_manifest")
# Files whose presence on a node without an apiserver manifest means it is not a clean worker.
CONTROL_PLANE_ONLY = (
    "admin_conf",
    "super_admin_conf",
    "apiserver_manifest",
    "controller_manager_manifest",
    "scheduler_manifest",
    "etcd_manifest",
    "etcd_member",
)


def classify(present: set[str]) -> str:
    """Name the node's state from the set of WATCHED names that exist on it."""
    if all(name in present for name in CONTROL_PLANE_REQUIRED):
        return "control_plane"
    if "kubelet_conf" in present and not present.intersection(CONTROL_PLANE_ONLY):
        return "worker"
    return "partial" if present else "absent"


def probe(dirs: dict[str, str]) -> dict[str, bool]:
    """Which WATCHED files exist, given the base directories by option name."""
    return {name: os.path.exists(os.path.join(dirs[base], rel)) for name, (base, rel) in WATCHED.items()}


def run(params: dict[str, Any]) -> dict[str, Any]:
    """The module's result for the given parameters; never a change."""
    files = probe({key: params[key] for key in ("kubernetes_dir", "kubelet_dir", "etcd_data_dir")})
    present = {name for name, exists in files.items() if exists}
    return {
        "changed": False,
        "state": classify(present),
        "files": files,
        "leftovers": sorted(present),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kubernetes_dir": {"type": "path", "default": "/etc/kubernetes"},
            "kubelet_dir": {"type": "path", "default": "/var/lib/kubelet"},
            "etcd_data_dir": {"type": "path", "default": "/var/lib/etcd"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module.params))


if __name__ == "__main__":
    main()
