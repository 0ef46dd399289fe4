# Module: server-side apply of many objects through one API client (one discovery, one connection).
"""Server-side apply a list of Kubernetes objects from the controller."""

from __future__ import annotations

import copy
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.bootstrap.plugins.module_utils.kube_client import (
    DynamicApiError,
    ResourceNotFoundError,
    dynamic_client,
)

DOCUMENTATION = r"""
---
module: kube_apply
short_description: Server-side apply a list of Kubernetes objects, reporting which ones changed
description:
  - Applies each object with server-side apply (C(kubectl apply --server-side)) through one API
    client, in the order given, so that a manifest of many objects (ArgoCD's install manifest) costs
    one API discovery, one metadata list per kind and namespace, and one request per object
    instead of a module run per object.
  - An object is C(changed) when it did not exist or its C(resourceVersion) moved; an apply that
    changes nothing leaves C(changed) false, so reruns stay idempotent.
  - In check mode every apply is sent with C(dryRun=All), so the API server validates it and says
    what would change, and nothing is stored.
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  kubeconfig:
    description: The kubeconfig to reach the cluster with.
    type: path
    required: true
  definitions:
    description: The objects, each a dict with apiVersion, kind and metadata.name.
    type: list
    elements: dict
    required: true
  namespace:
    description: Namespace of the namespaced objects that name none.
    type: str
  field_manager:
    description: The field manager that owns what is applied.
    type: str
    required: true
  force_conflicts:
    description: Take over fields another manager owns (C(--force-conflicts)).
    type: bool
    default: true
requirements:
  - kubernetes (the Python client kubernetes.core uses too)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Apply the ArgoCD install manifest
  homelab.bootstrap.kube_apply:
    kubeconfig: ~/.kube/homelab.conf
    definitions: "{{ lookup('ansible.builtin.file', 'install.yaml') | homelab.bootstrap.manifest_objects }}"
    namespace: argocd
    field_manager: homelab-bootstrap
"""

RETURN = r"""
created:
  description: C(Kind/namespace/name) of each object that did not exist before.
  returned: always
  type: list
  elements: str
updated:
  description: C(Kind/namespace/name) of each existing object the apply changed.
  returned: always
  type: list
  elements: str
unchanged:
  description: How many objects the apply left as they were.
  returned: always
  type: int
"""


# Object metadata only (names and resourceVersions), not whole objects: CRDs are large.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return "/".join(p for p in (obj.get("kind"), meta.get("namespace"), meta.get("name")) if p)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kubeconfig": {"type": "path", "required": True},
            "definitions": {"type": "list", "elements": "dict", "required": True},
            "namespace": {"type": "str"},
            "field_manager": {"type": "str", "required": True},
            "force_conflicts": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    dyn = dynamic_client(module)

    def resource_of(obj: dict[str, Any]) -> Any:
        try:
            return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            # A kind whose CRD this very list created a moment ago: discover again, once.
            dyn.resources.invalidate_cache()
            return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    # The resourceVersion of every object that exists already, from one metadata-only list per
    # kind and namespace instead of one read per object: the apply then costs one request per
    # object, half of the API server's work on a busy cluster.
    versions: dict[tuple[str, str, str | None], dict[str, str]] = {}

    def existing_version(resource: Any, name: str, namespace: str | None) -> str | None:
        key = (resource.group_version, resource.kind, namespace)
        if key not in versions:
            listing = resource.get(namespace=namespace, header_params={"Accept": METADATA_LIST})
            versions[key] = {item.metadata.name: item.metadata.resourceVersion for item in listing.items or []}
        return versions[key].get(name)

    objects: list[dict[str, Any]] = []
    for definition in params["definitions"]:
        obj = copy.deepcopy(definition)
        obj.setdefault("metadata", {})
        objects.append(obj)

    created: list[str] = []
    updated: list[str] = []
    unchanged = 0
    for obj in objects:
        meta = obj["metadata"]
        try:
            resource = resource_of(obj)
        except (KeyError, ResourceNotFoundError) as exc:
            module.fail_json(msg=f"{_ref(obj)}: the cluster has no such kind ({exc})", created=created, updated=updated)
        if resource.namespaced:
            meta.setdefault("namespace", params["namespace"] or "default")
        else:
            meta.pop("namespace", None)
        namespace = meta.get("namespace")
        try:
            before = existing_version(resource, meta["name"], namespace)
            after = resource.server_side_apply(
                body=obj,
                name=meta["name"],
                namespace=namespace,
                field_manager=params["field_manager"],
                force_conflicts=params["force_conflicts"],
                dry_run="All" if module.check_mode else None,
            )
        except DynamicApiError as exc:
            module.fail_json(
                msg=f"{_ref(obj)}: the API server refused it: {exc.summary()}", created=created, updated=updated
            )
        if before is None:
            created.append(_ref(obj))
        elif after.metadata.resourceVersion != before:
            updated.append(_ref(obj))
        else:
            unchanged += 1
    module.exit_json(changed=bool(created or updated), created=created, updated=updated, unchanged=unchanged)


if __name__ == "__main__":
    main()
