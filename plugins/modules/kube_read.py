# Module: several Kubernetes reads through one API client (one discovery, one connection).
"""Read several kinds of Kubernetes objects from the controller in one module run."""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.bootstrap.plugins.module_utils.kube_client import (
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
    dynamic_client,
)

DOCUMENTATION = r"""
---
module: kube_read
short_description: Read several kinds of Kubernetes objects in one module run
description:
  - Runs each query (a kind, optionally narrowed by namespace, name and label selectors) through one
    API client, so that a phase which needs, say, an Application, the DaemonSets and the Deployments
    of a component pays for one module start and one API discovery instead of one per kind.
  - A query for a kind the cluster does not serve (an ArgoCD Application before ArgoCD's CRDs exist)
    or for a name that does not exist returns no objects, as C(kubernetes.core.k8s_info) does.
  - Read-only; never reports C(changed).
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  kubeconfig:
    description: The kubeconfig to reach the cluster with.
    type: path
    required: true
  queries:
    description: What to read, in the order the results come back.
    type: list
    elements: dict
    required: true
    suboptions:
      api_version:
        description: API group and version of the kind (C(apps/v1), C(v1)).
        type: str
        required: true
      kind:
        description: The kind to read.
        type: str
        required: true
      namespace:
        description: Namespace to read from; all namespaces (or a cluster-scoped kind) when left out.
        type: str
      name:
        description: Read only the object of this name (I(label_selectors) then do not apply).
        type: str
      label_selectors:
        description: Label selectors the objects must all match (C(app.kubernetes.io/part-of=cilium)).
        type: list
        elements: str
        default: []
requirements:
  - kubernetes (the Python client kubernetes.core uses too)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the Application that owns Cilium and Cilium's workloads
  homelab.bootstrap.kube_read:
    kubeconfig: ~/.kube/homelab.conf
    queries:
      - {api_version: argoproj.io/v1alpha1, kind: Application, namespace: argocd, name: cilium}
      - api_version: apps/v1
        kind: DaemonSet
        namespace: kube-system
        label_selectors: [app.kubernetes.io/part-of=cilium]
  register: cilium_read
"""

RETURN = r"""
results:
  description: One entry per query, in the order of I(queries).
  returned: always
  type: list
  elements: dict
  contains:
    resources:
      description: The objects found (an empty list when none, or when the cluster does not serve the kind).
      type: list
      elements: dict
    api_found:
      description: Whether the cluster serves the kind.
      type: bool
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kubeconfig": {"type": "path", "required": True},
            "queries": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "api_version": {"type": "str", "required": True},
                    "kind": {"type": "str", "required": True},
                    "namespace": {"type": "str"},
                    "name": {"type": "str"},
                    "label_selectors": {"type": "list", "elements": "str", "default": []},
                },
            },
        },
        supports_check_mode=True,
    )
    dyn = dynamic_client(module)
    results: list[dict[str, Any]] = []
    for query in module.params["queries"]:
        what = f"{query['kind']} ({query['api_version']})"
        try:
            resource = dyn.resources.get(api_version=query["api_version"], kind=query["kind"])
        except ResourceNotFoundError:
            results.append({"resources": [], "api_found": False})
            continue
        try:
            if query["name"]:
                found = [resource.get(name=query["name"], namespace=query["namespace"]).to_dict()]
            else:
                listing = resource.get(
                    namespace=query["namespace"], label_selector=",".join(query["label_selectors"]) or None
                )
                found = [item.to_dict() for item in listing.items]
                # A list's items carry no kind of their own: set it, as on an object read by name.
                for item in found:
                    item.setdefault("apiVersion", resource.group_version)
                    item.setdefault("kind", resource.kind)
        except NotFoundError:
            found = []
        except DynamicApiError as exc:
            module.fail_json(msg=f"reading {what} failed: {exc.summary()}", results=results)
        results.append({"resources": found, "api_found": True})
    module.exit_json(changed=False, results=results)


if __name__ == "__main__":
    main()
