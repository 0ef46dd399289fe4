# An install manifest as the objects to apply: parsed with libyaml (ArgoCD's is 2 MB, too slow
# for Jinja's from_yaml_all), objects switched off left out, settings merged into ConfigMaps.
"""Jinja filters of the homelab.bootstrap collection for upstream install manifests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _with_resources(obj: dict[str, Any], workload: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Deployment/StatefulSet with each named container's resources set."""
    spec = dict(obj["spec"]["template"]["spec"])
    for field, key in (("initContainers", "init_containers"), ("containers", "containers")):
        wanted = dict(workload.get(key) or {})
        containers = []
        for container in spec.get(field) or []:
            name = container.get("name")
            containers.append({**container, "resources": wanted.pop(name)} if name in wanted else container)
        if wanted:
            raise AnsibleFilterError(f"manifest_objects: {_ref(obj)} has no {field} {', '.join(sorted(wanted))}")
        if containers:
            spec[field] = containers
    template = {**obj["spec"]["template"], "spec": spec}
    return {**obj, "spec": {**obj["spec"], "template": template}}


def manifest_objects(
    text: str,
    omit: Iterable[str] = (),
    configmap_data: Mapping[str, Mapping[str, str]] | None = None,
    resources: Mapping[str, Mapping[str, Any]] | None = None,
    subject_namespace: str = "",
) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest, in order.

    omit: "Kind/name" of objects to leave out (each must be in the manifest: a name that no
    longer matches would silently install what the user switched off).
    configmap_data: {ConfigMap name: data}, merged over that ConfigMap's data (it must exist).
    resources: {workload name: {kind, containers: {name: resources}, init_containers: {...}}},
    each container's requests and limits; workloads the manifest does not have are skipped (the
    standard and HA variants differ), a container a listed workload lacks is an error.
    subject_namespace: given to ServiceAccount subjects of RoleBindings that name none, as
    kustomize's `namespace:` does (so the objects equal the tree's build of the same manifest).
    """
    try:
        objects = [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc]
    except yaml.YAMLError as exc:
        raise AnsibleFilterError(f"manifest_objects: the manifest is not valid YAML: {exc}") from exc
    refs = {_ref(o) for o in objects}
    omitted = set(omit)
    settings = dict(configmap_data or {})
    workloads = {f"{w.get('kind')}/{name}": w for name, w in (resources or {}).items()}
    missing = sorted((omitted - refs) | {f"ConfigMap/{name}" for name in settings} - refs)
    if missing:
        raise AnsibleFilterError(f"manifest_objects: the manifest holds no {', '.join(missing)}")
    result = []
    for obj in objects:
        ref = _ref(obj)
        if ref in omitted:
            continue
        name = obj["metadata"]["name"]
        if obj.get("kind") == "ConfigMap" and name in settings:
            result.append({**obj, "data": {**(obj.get("data") or {}), **settings[name]}})
        elif ref in workloads:
            result.append(_with_resources(obj, workloads[ref]))
        elif subject_namespace and obj.get("kind") == "RoleBinding":
            subjects = [
                {**s, "namespace": subject_namespace}
                if s.get("kind") == "ServiceAccount" and not s.get("namespace")
                else s
                for s in obj.get("subjects") or []
            ]
            result.append({**obj, "subjects": subjects})
        else:
            result.append(obj)
    return result


class FilterModule:
    """homelab.bootstrap manifest filters."""

    def filters(self) -> dict[str, Any]:
        return {"manifest_objects": manifest_objects}
