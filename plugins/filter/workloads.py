# Filters that turn Kubernetes objects into the one-line reasons a rollout is stuck.
"""Jinja filters of the homelab.bootstrap collection for reporting pods that do not come up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _reason(reason: Any, message: Any) -> str:
    text = str(reason or "")
    if message:
        text = f"{text}: {message}" if text else str(message)
    return text


def _container_problems(status: Mapping[str, Any]) -> list[str]:
    problems = []
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in statuses:
        if container.get("ready"):
            continue
        state = container.get("state") or {}
        name = container.get("name", "?")
        if "waiting" in state:
            waiting = state["waiting"] or {}
            problems.append(f"{name} waiting ({_reason(waiting.get('reason'), waiting.get('message'))})")
        elif "terminated" in state:
            ended = state["terminated"] or {}
            why = _reason(ended.get("reason"), ended.get("message"))
            problems.append(f"{name} terminated ({why}, exit {ended.get('exitCode')})")
        elif container.get("restartCount"):
            problems.append(f"{name} running but not ready after {container['restartCount']} restarts")
        else:
            problems.append(f"{name} running but not ready")
    return problems


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per pod that is not Ready: where it is, and why (container state or scheduling).

    Example: "kube-system/cilium-x2x on cp1: Pending; cilium-agent waiting (ErrImagePull: ...)".
    """
    lines = []
    for pod in pods:
        if _ready(pod):
            continue
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName") or "no node"
        details = _container_problems(status)
        # Containers queued behind a failing init container only repeat that they wait for it.
        blocking = [d for d in details if "(PodInitializing)" not in d]
        details = blocking or details
        failing = [c for c in status.get("conditions") or [] if c.get("status") == "False" and c.get("reason")]
        # An unscheduled pod has no containers to speak of; other conditions only when they say nothing.
        failing.sort(key=lambda c: c.get("type") != "PodScheduled")
        for condition in failing:
            if condition.get("type") == "PodScheduled" or not details:
                details.append(f"{condition['type']}: {_reason(condition['reason'], condition.get('message'))}")
        if not details and status.get("reason"):
            details.append(_reason(status["reason"], status.get("message")))
        where = f"{meta.get('namespace', '?')}/{meta.get('name', '?')} on {node}"
        lines.append(f"{where}: {status.get('phase', 'Unknown')}; {'; '.join(details) or 'not ready'}")
    return lines


def workload_readiness(workloads: Iterable[Mapping[str, Any]]) -> list[str]:
    """ "Kind/name: ready/desired ready" for DaemonSets, Deployments and StatefulSets."""
    lines = []
    for item in workloads:
        status = item.get("status") or {}
        if item.get("kind") == "DaemonSet":
            ready, desired = status.get("numberReady", 0), status.get("desiredNumberScheduled", 0)
        else:
            ready, desired = status.get("readyReplicas", 0), (item.get("spec") or {}).get("replicas", 1)
        name = (item.get("metadata") or {}).get("name", "?")
        lines.append(f"{item.get('kind', '?')}/{name}: {ready or 0}/{desired or 0} ready")
    return lines


def _rolled_out(item: Mapping[str, Any]) -> bool:
    """As kubernetes.core's wait: the controller saw the newest spec, and every replica is
    updated and ready (a DaemonSet: on every node it should run on)."""
    meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    if item.get("kind") == "DaemonSet":
        desired = status.get("desiredNumberScheduled", 0)
        return status.get("numberReady", 0) == desired and status.get("updatedNumberScheduled", 0) == desired
    desired = spec.get("replicas", 1)
    counts = [status.get("readyReplicas", 0), status.get("updatedReplicas", 0)]
    if item.get("kind") == "Deployment":
        counts.append(status.get("availableReplicas", 0))
    elif status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
        return False
    return all((count or 0) == desired for count in counts)


def unready_workloads(workloads: Iterable[Mapping[str, Any]]) -> list[str]:
    """ "Kind/name" of each DaemonSet, Deployment or StatefulSet not fully rolled out: what a
    rerun still has to wait for (usually nothing)."""
    return [
        f"{item.get('kind')}/{(item.get('metadata') or {}).get('name')}" for item in workloads if not _rolled_out(item)
    ]


def established_crds(crds: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the CustomResourceDefinitions whose Established condition is True."""
    return [
        (crd.get("metadata") or {}).get("name", "")
        for crd in crds
        if any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )
    ]


class FilterModule:
    """homelab.bootstrap workload filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "pod_problems": pod_problems,
            "workload_readiness": workload_readiness,
            "unready_workloads": unready_workloads,
            "established_crds": established_crds,
        }
