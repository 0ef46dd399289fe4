# The filters that report why a rollout does not come up (pod_problems, workload_readiness).
from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.homelab.bootstrap.plugins.filter.workloads import (
    established_crds,
    pod_problems,
    unready_workloads,
    workload_readiness,
)


def pod(name: str, node: str | None, phase: str, ready: bool, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "reason": "ContainersNotReady"}]
    return {
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions + status.pop("conditions", []), **status},
    }


IMAGE_PULL = {
    "name": "cilium-agent",
    "ready": False,
    "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "quay.io/cilium/cilium"'}},
}
CRASHED = {
    "name": "cilium-operator",
    "ready": False,
    "state": {"terminated": {"reason": "Error", "exitCode": 1}},
}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/1 nodes are available",
}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([pod("cilium-a", "cp1", "Running", True, containerStatuses=[])], []),
        (
            [pod("cilium-a", "cp1", "Pending", False, containerStatuses=[IMAGE_PULL])],
            [
                "kube-system/cilium-a on cp1: Pending; cilium-agent waiting "
                '(ImagePullBackOff: Back-off pulling image "quay.io/cilium/cilium")'
            ],
        ),
        (
            [pod("cilium-operator-x", "cp1", "Running", False, containerStatuses=[CRASHED])],
            ["kube-system/cilium-operator-x on cp1: Running; cilium-operator terminated (Error, exit 1)"],
        ),
        (
            [pod("cilium-operator-y", None, "Pending", False, conditions=[UNSCHEDULABLE])],
            ["kube-system/cilium-operator-y on no node: Pending; PodScheduled: Unschedulable: 0/1 nodes are available"],
        ),
        (
            [
                pod(
                    "cilium-b",
                    "w1",
                    "Running",
                    False,
                    containerStatuses=[{"name": "agent", "ready": False, "state": {}}],
                )
            ],
            ["kube-system/cilium-b on w1: Running; agent running but not ready"],
        ),
    ],
)
def test_pod_problems(pods: list[dict[str, Any]], expected: list[str]) -> None:
    assert pod_problems(pods) == expected


def test_pod_problems_init_containers_come_first() -> None:
    init = {"name": "mount-cgroup", "ready": False, "state": {"waiting": {"reason": "ErrImagePull"}}}
    queued = {"name": "cilium-agent", "ready": False, "state": {"waiting": {"reason": "PodInitializing"}}}
    found = pod_problems(
        [pod("cilium-c", "cp1", "Pending", False, initContainerStatuses=[init], containerStatuses=[queued])]
    )
    assert found == ["kube-system/cilium-c on cp1: Pending; mount-cgroup waiting (ErrImagePull)"]


def test_workload_readiness() -> None:
    objects = [
        {
            "kind": "DaemonSet",
            "metadata": {"name": "cilium"},
            "status": {"numberReady": 1, "desiredNumberScheduled": 2},
        },
        {"kind": "Deployment", "metadata": {"name": "cilium-operator"}, "spec": {"replicas": 2}, "status": {}},
        {
            "kind": "StatefulSet",
            "metadata": {"name": "argocd-application-controller"},
            "spec": {"replicas": 1},
            "status": {"readyReplicas": 1},
        },
    ]
    assert workload_readiness(objects) == [
        "DaemonSet/cilium: 1/2 ready",
        "Deployment/cilium-operator: 0/2 ready",
        "StatefulSet/argocd-application-controller: 1/1 ready",
    ]


def workload(kind: str, generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    spec = {} if kind == "DaemonSet" else {"replicas": 2}
    return {
        "kind": kind,
        "metadata": {"name": kind.lower(), "generation": generation},
        "spec": spec,
        "status": {"observedGeneration": observed, **status},
    }


ROLLED_OUT = {
    "DaemonSet": {"desiredNumberScheduled": 5, "numberReady": 5, "updatedNumberScheduled": 5},
    "Deployment": {"readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    "StatefulSet": {"readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"},
}


@pytest.mark.parametrize("kind", sorted(ROLLED_OUT))
def test_rolled_out_workloads_need_no_wait(kind: str) -> None:
    assert unready_workloads([workload(kind, **ROLLED_OUT[kind])]) == []


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("DaemonSet", {"numberReady": 4}),
        ("DaemonSet", {"updatedNumberScheduled": 3}),
        ("Deployment", {"availableReplicas": 1}),
        ("Deployment", {"updatedReplicas": 1}),
        ("StatefulSet", {"updateRevision": "b"}),
        ("StatefulSet", {"readyReplicas": 0}),
    ],
)
def test_a_rollout_in_progress_is_waited_for(kind: str, changes: dict[str, Any]) -> None:
    assert unready_workloads([workload(kind, **{**ROLLED_OUT[kind], **changes})]) == [f"{kind}/{kind.lower()}"]


def test_a_spec_the_controller_has_not_seen_is_waited_for() -> None:
    """Right after an apply the counts still describe the previous spec."""
    stale = workload("Deployment", generation=3, observed=2, **ROLLED_OUT["Deployment"])
    assert unready_workloads([stale]) == ["Deployment/deployment"]


def test_established_crds_are_named() -> None:
    crds = [
        {"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Established", "status": "True"}]}},
        {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Established", "status": "False"}]}},
        {"metadata": {"name": "c"}, "status": {}},
    ]
    assert established_crds(crds) == ["a"]
