# What the argocd phase installs and the tree points ArgoCD at: the install manifest's objects
# (Dex switched off, the tree's argocd-cm settings) and chart repositories through the mirror.
from __future__ import annotations

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.bootstrap.plugins.filter.manifests import manifest_objects
from ansible_collections.homelab.bootstrap.plugins.module_utils import gitops_tree
from tests.conftest import REPO

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
data:
  admin.enabled: "true"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: argocd-dex-server
---
# an empty document, as upstream's manifests have between sections
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: argocd-server
"""
CATALOG = yaml.safe_load((REPO / "roles/gitops/vars/main/components.yml").read_text())["gitops_catalog"]
CHARTS = {
    "cilium": {"repo": "https://helm.cilium.io/", "chart": "cilium", "version": "1.20.2"},
    "local": {"repo": "oci://registry.example/charts", "chart": "x", "version": "1"},
}


def refs(objects: list[dict]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


def test_objects_in_order_without_empty_documents() -> None:
    assert refs(manifest_objects(MANIFEST)) == [
        "ConfigMap/argocd-cm",
        "Deployment/argocd-dex-server",
        "Deployment/argocd-server",
    ]


def test_omitted_objects_are_left_out_and_settings_merged() -> None:
    objects = manifest_objects(
        MANIFEST, omit=["Deployment/argocd-dex-server"], configmap_data={"argocd-cm": {"timeout.reconciliation": "20s"}}
    )
    assert refs(objects) == ["ConfigMap/argocd-cm", "Deployment/argocd-server"]
    assert objects[0]["data"] == {"admin.enabled": "true", "timeout.reconciliation": "20s"}


@pytest.mark.parametrize(
    ("omit", "data", "missing"),
    [
        (["Deployment/argocd-dex"], {}, "Deployment/argocd-dex"),
        ([], {"argocd-rbac-cm": {"policy.default": "role:readonly"}}, "ConfigMap/argocd-rbac-cm"),
    ],
)
def test_a_name_the_manifest_lacks_is_an_error(omit: list[str], data: dict, missing: str) -> None:
    """A renamed upstream object must not slip through: the user switched it off."""
    with pytest.raises(AnsibleFilterError, match=missing):
        manifest_objects(MANIFEST, omit=omit, configmap_data=data)


def test_invalid_yaml_is_an_error() -> None:
    with pytest.raises(AnsibleFilterError, match="not valid YAML"):
        manifest_objects("a: [b")


@pytest.mark.parametrize(
    ("mirror", "chart", "expected"),
    [
        ("", "cilium", "https://helm.cilium.io/"),
        ("http://172.30.0.2:8080", "cilium", "http://172.30.0.2:8080/helm.cilium.io/"),
        ("http://mirror.lan/files/", "cilium", "http://mirror.lan/files/helm.cilium.io/"),
        # OCI registries go through image_mirror_url, not the file mirror.
        ("http://172.30.0.2:8080", "local", "oci://registry.example/charts"),
    ],
)
def test_chart_repositories_follow_the_download_mirror(mirror: str, chart: str, expected: str) -> None:
    settings = {
        "gitops_repo_url": "http://git.lan/cluster.git",
        "gitops_repo_branch": "main",
        "gitops_charts": CHARTS,
        "download_mirror_url": mirror,
    }
    entry = {**CATALOG["cilium"], "chart": chart}
    app = gitops_tree.application("cilium", entry, settings)
    assert app["spec"]["sources"][0]["repoURL"] == expected
    project = gitops_tree.app_project("platform", {"cilium": entry}, settings)
    # The project admits exactly the repository the Application uses.
    assert project["spec"]["sourceRepos"] == sorted({expected, "http://git.lan/cluster.git"})


def test_namespaces_a_chart_creates_are_destinations_without_a_namespace_file() -> None:
    """Cilium's chart creates cilium-secrets itself: the project admits it, the tree does not
    create it a second time (two Applications would own one Namespace)."""
    assert "cilium-secrets" in CATALOG["cilium"]["chart_namespaces"]
    settings = {"gitops_repo_url": "http://git.lan/cluster.git", "gitops_charts": CHARTS}
    project = gitops_tree.app_project("platform", {"cilium": CATALOG["cilium"]}, settings)
    assert {d["namespace"] for d in project["spec"]["destinations"]} >= {"kube-system", "cilium-secrets"}
    levels = gitops_tree.namespace_levels({"cilium": CATALOG["cilium"]}, "baseline")
    assert "cilium-secrets" not in levels


WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: argocd-repo-server
spec:
  template:
    spec:
      initContainers:
      - name: copyutil
        image: argocd
      containers:
      - name: argocd-repo-server
        image: argocd
      - name: sidecar
        image: other
"""
REPO_SERVER = {
    "kind": "Deployment",
    "init_containers": {"copyutil": {"requests": {"cpu": "10m"}}},
    "containers": {"argocd-repo-server": {"limits": {"memory": "1Gi"}}},
}


def test_workload_resources_are_set_per_container() -> None:
    """The bootstrap installs ArgoCD with the tree's requests and limits: its own Application
    then finds nothing to change (no second rollout right after the install)."""
    (deployment,) = manifest_objects(WORKLOADS, resources={"argocd-repo-server": REPO_SERVER})
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["resources"] == {"requests": {"cpu": "10m"}}
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert "resources" not in pod["containers"][1]


def test_resources_of_a_missing_container_are_an_error() -> None:
    renamed = {**REPO_SERVER, "containers": {"repo-server": {}}}
    with pytest.raises(AnsibleFilterError, match="has no containers repo-server"):
        manifest_objects(WORKLOADS, resources={"argocd-repo-server": renamed})
    # A workload only the other variant (standard or HA) has is skipped, as is an omitted one.
    assert manifest_objects(WORKLOADS, resources={"argocd-redis": {"kind": "Deployment"}})[0] == yaml.safe_load(
        WORKLOADS
    )
    assert (
        manifest_objects(
            WORKLOADS, omit=["Deployment/argocd-repo-server"], resources={"argocd-repo-server": REPO_SERVER}
        )
        == []
    )


def test_role_binding_subjects_get_the_namespace_as_kustomize_gives_them() -> None:
    binding = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: argocd-server
subjects:
- kind: ServiceAccount
  name: argocd-server
- kind: User
  name: someone
"""
    (obj,) = manifest_objects(binding, subject_namespace="argocd")
    assert obj["subjects"] == [
        {"kind": "ServiceAccount", "name": "argocd-server", "namespace": "argocd"},
        {"kind": "User", "name": "someone"},
    ]
