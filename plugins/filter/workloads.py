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


class FilterModule:
    """homelab.bootstrap workload filters."""

    def filters(self) -> dict[str, Any]:
        return {"pod_problems": pod_problems, "workload_readiness": workload_readiness}
