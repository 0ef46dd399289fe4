# tools/validate_tree.py: a small valid tree passes, and each check rejects the fault it exists for.
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, load_script

vt = load_script("validate_tree", REPO / "tools" / "validate_tree.py")

REPO_URL = "https://git.example.com/homelab/cluster.git"
SERVER = "https://kubernetes.default.svc"
ARGO = "cluster/platform/gitops/argocd"
WEB = "cluster/apps/media/web"
KPS = "cluster/platform/observability/kube-prometheus-stack"
KYVERNO = "cluster/platform/base/security/kyverno"
NAMESPACES = "cluster/platform/base/namespaces"
PSA = "cluster/platform/base/security/pod-security"
ROOT = "cluster/bootstrap/root-application"
KPS_CHART = {"repo": "https://prometheus-community.github.io/helm-charts", "chart": "kube-prometheus-stack"}


def kustomization(*resources: str, components: tuple[str, ...] = ()) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
    }
    if components:
        doc["components"] = list(components)
    return doc


def application(name: str, path: str, namespace: str, project: str, *, wave: int, chart: str = "") -> dict[str, Any]:
    git = {"repoURL": REPO_URL, "targetRevision": "main", "path": path}
    spec: dict[str, Any] = {"project": project, "destination": {"server": SERVER, "namespace": namespace}}
    if chart:
        helm = {"valueFiles": [f"$values/{path}/values.yaml"]}
        chart_src = {"repoURL": KPS_CHART["repo"], "chart": chart, "targetRevision": "80.0.0", "helm": helm}
        spec["sources"] = [chart_src, {**git, "ref": "values"}]
    else:
        spec["source"] = git
    meta = {"name": name, "namespace": "argocd", "annotations": {"argocd.argoproj.io/sync-wave": str(wave)}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": meta, "spec": spec}


def project(name: str, namespaces: list[str], repos: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "sourceRepos": repos,
            "destinations": [{"server": SERVER, "namespace": ns} for ns in namespaces],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


def deployment(image: str) -> dict[str, Any]:
    container = {
        "name": "web",
        "image": image,
        "ports": [{"containerPort": 8080, "name": "http"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "media"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
        },
    }


DISALLOW_LATEST = {
    "apiVersion": "kyverno.io/v1",
    "kind": "ClusterPolicy",
    "metadata": {"name": "disallow-latest-tag"},
    "spec": {
        "validationFailureAction": "Enforce",
        "background": True,
        "rules": [
            {
                "name": "require-pinned-tag",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "validate": {
                    "message": "images must be pinned to a tag other than latest",
                    "pattern": {"spec": {"containers": [{"image": "*:* & !*:latest"}]}},
                },
            }
        ],
    },
}


def valid_tree() -> dict[str, Any]:
    """Path -> YAML documents of a small tree shaped like the one roles/gitops renders."""
    apps = {
        "namespaces": application("namespaces", NAMESPACES, "default", "platform", wave=-20),
        "kube-prometheus-stack": application(
            "kube-prometheus-stack", KPS, "monitoring", "platform", wave=-10, chart=KPS_CHART["chart"]
        ),
        "kyverno": application("kyverno", KYVERNO, "kyverno", "platform", wave=-5),
        "web": application("web", WEB, "media", "media", wave=30),
    }
    root = application("root", ARGO, "argocd", "platform", wave=0)
    del root["metadata"]["annotations"]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "media", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": "media"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http"}]},
    }
    psa_labels = {"pod-security.kubernetes.io/enforce": "baseline"}
    psa_patch = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "media", "labels": psa_labels}}
    )
    return {
        f"{ROOT}/kustomization.yaml": [kustomization("root-app.yaml")],
        f"{ROOT}/root-app.yaml": [root],
        f"{ARGO}/kustomization.yaml": [kustomization("apps", "projects", "../../../bootstrap/root-application")],
        f"{ARGO}/apps/kustomization.yaml": [kustomization(*(f"{n}.yaml" for n in apps))],
        **{f"{ARGO}/apps/{n}.yaml": [doc] for n, doc in apps.items()},
        f"{ARGO}/projects/kustomization.yaml": [kustomization("platform.yaml", "media.yaml")],
        f"{ARGO}/projects/platform.yaml": [
            project("platform", ["argocd", "default", "kyverno", "monitoring"], [REPO_URL, KPS_CHART["repo"]])
        ],
        f"{ARGO}/projects/media.yaml": [project("media", ["media"], [REPO_URL])],
        f"{NAMESPACES}/kustomization.yaml": [kustomization("media.yaml", components=("../security/pod-security",))],
        f"{NAMESPACES}/media.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "media"}}],
        f"{PSA}/kustomization.yaml": [
            {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "patches": [{"target": {"kind": "Namespace", "name": "media"}, "patch": psa_patch}],
            }
        ],
        f"{KPS}/kustomization.yaml": [kustomization()],
        f"{KPS}/values.yaml": [{"grafana": {"enabled": False}}],
        f"{KYVERNO}/kustomization.yaml": [kustomization("disallow-latest-tag.yaml")],
        f"{KYVERNO}/disallow-latest-tag.yaml": [DISALLOW_LATEST],
        f"{WEB}/kustomization.yaml": [kustomization("deployment.yaml", "service.yaml", "servicemonitor.yaml")],
        f"{WEB}/deployment.yaml": [deployment("ghcr.io/example-org/web:1.4.2")],
        f"{WEB}/service.yaml": [service],
        f"{WEB}/servicemonitor.yaml": [monitor],
    }


def write_tree(files: dict[str, Any], root: Path) -> Path:
    for rel, docs in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("---\n" + yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return root


def write_defaults(root: Path, extra_charts: dict[str, str] | None = None) -> Path:
    """versions.yml and tools.yml from the repository; a charts.yml pinning the fixture's charts."""
    defaults = root / "defaults"
    defaults.mkdir()
    for name in ("versions.yml", "tools.yml"):
        shutil.copy(REPO / "roles/cluster_defaults/defaults/main" / name, defaults / name)
    pins = {"kube_prometheus_stack": {**KPS_CHART, "version": "80.0.0"}}
    pins |= {name: {"repo": KYVERNO_REPO, "chart": name, "version": v} for name, v in (extra_charts or {}).items()}
    charts = {"gitops_charts": pins}
    (defaults / "charts.yml").write_text(yaml.safe_dump(charts), encoding="utf-8")
    return defaults


def require_tools() -> None:
    try:
        vt.find_tools()
    except vt.CannotValidate as exc:
        pytest.fail(str(exc), pytrace=False)


def validate(
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None] | None = None,
    only: tuple[str, ...] = (),
    charts: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run the script on the valid tree after `change`; `only` limits it to the checks a test is about."""
    require_tools()
    files = valid_tree()
    if change:
        change(files)
    tree = write_tree(files, tmp_path / "tree")
    defaults = write_defaults(tmp_path, charts)
    cmd = [sys.executable, str(REPO / "tools" / "validate_tree.py"), str(tree), "--json", "--defaults", str(defaults)]
    if only:
        cmd += ["--only", *only]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def messages(report: dict[str, Any], check: str) -> list[str]:
    return [f"{f['where']}: {f['message']}" for f in report["findings"] if f["check"] == check]


def test_a_valid_tree_passes_every_check(tmp_path: Path) -> None:
    code, report = validate(tmp_path)
    assert report["findings"] == []
    assert code == 0
    stats = report["stats"]
    assert stats["schemas"]["by_kind"]["Deployment"] == 1
    assert stats["schemas"]["crd_schemas"] == {
        "argoproj.io/application_v1alpha1.json": 5,
        "argoproj.io/appproject_v1alpha1.json": 2,
        "kyverno.io/clusterpolicy_v1.json": 1,
        "monitoring.coreos.com/servicemonitor_v1.json": 1,
    }
    assert stats["kyverno"]["policies"] == 1
    assert stats["graph"] == {"applications": 5, "projects": 2}
    [chart] = stats["charts"]
    assert not chart["rendered"]
    assert chart["reason"] == vt.NO_OFFLINE_SOURCE


def test_application_pointing_at_a_missing_path(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{ARGO}/apps/web.yaml"][0]["spec"]["source"]["path"] = "cluster/apps/media/nope"

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    graph = messages(report, "graph")
    assert "Application web: source path cluster/apps/media/nope does not exist in the tree" in graph
    assert f"{WEB}: no Application reaches this directory (dead files)" in graph


def test_directory_reached_by_two_applications(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{ARGO}/apps/web2.yaml"] = [application("web2", WEB, "media", "media", wave=30)]
        files[f"{ARGO}/apps/kustomization.yaml"][0]["resources"].append("web2.yaml")

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    assert messages(report, "graph") == [f"{WEB}: reached by 2 Applications (web, web2): each object once"]


def test_unknown_field_is_rejected_strictly(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/deployment.yaml"][0]["spec"]["replica"] = 2

    code, report = validate(tmp_path, change, only=("schemas",))
    assert code == 1
    [problem] = messages(report, "schemas")
    assert problem == (
        f"kustomize build {WEB}: Deployment web ({WEB}/deployment.yaml):"
        " /spec: additional properties 'replica' not allowed"
    )


def test_unknown_top_level_field_of_a_custom_resource_is_rejected(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/servicemonitor.yaml"][0]["selector"] = {}

    code, report = validate(tmp_path, change, only=("schemas",))
    assert code == 1
    [problem] = messages(report, "schemas")
    assert "ServiceMonitor web" in problem
    assert "additional properties 'selector'" in problem


def test_latest_image_violates_the_trees_policy(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/deployment.yaml"][0] = deployment("ghcr.io/example-org/web:latest")

    code, report = validate(tmp_path, change, only=("kyverno",))
    assert code == 1
    [problem] = messages(report, "kyverno")
    assert problem.startswith(f"{WEB}/deployment.yaml: Deployment media/web: disallow-latest-tag/")
    assert "(Enforce)" in problem
    assert "images must be pinned" in problem


def test_policy_exception_lets_a_workload_through(tmp_path: Path) -> None:
    exception = {
        "apiVersion": "kyverno.io/v2",
        "kind": "PolicyException",
        "metadata": {"name": "web-latest", "namespace": "kyverno"},
        "spec": {
            "exceptions": [
                {"policyName": "disallow-latest-tag", "ruleNames": ["require-pinned-tag", "autogen-require-pinned-tag"]}
            ],
            "match": {"any": [{"resources": {"kinds": ["Deployment", "Pod"], "namespaces": ["media"]}}]},
        },
    }

    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/deployment.yaml"][0] = deployment("ghcr.io/example-org/web:latest")
        files[f"{KYVERNO}/exception.yaml"] = [exception]
        files[f"{KYVERNO}/kustomization.yaml"][0]["resources"].append("exception.yaml")

    code, report = validate(tmp_path, change, only=("kyverno",))
    assert report["findings"] == []
    assert code == 0
    assert report["stats"]["kyverno"]["exceptions"] == 1


def test_a_tree_without_policies_fails(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{KYVERNO}/kustomization.yaml"][0]["resources"] = []

    code, report = validate(tmp_path, change, only=("kyverno",))
    assert code == 1
    assert messages(report, "kyverno") == [
        "tree: the tree has no Kyverno policies (ClusterPolicy, Policy, ValidatingPolicy...)"
    ]


def test_secret_with_string_data(tmp_path: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web-db", "namespace": "media"},
        "stringData": {"username": "web"},
    }

    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/secret.yaml"] = [secret]
        files[f"{WEB}/kustomization.yaml"][0]["resources"].append("secret.yaml")

    code, report = validate(tmp_path, change, only=("secrets",))
    assert code == 1
    assert messages(report, "secrets") == [
        f"{WEB}/secret.yaml: Secret media/web-db carries data/stringData: use an ExternalSecret"
    ]


def test_custom_resource_whose_provider_syncs_later(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        kps = files[f"{ARGO}/apps/kube-prometheus-stack.yaml"][0]
        kps["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] = "40"

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    assert messages(report, "waves") == [
        "Application web: wave 30 uses ServiceMonitor (monitoring.coreos.com) but its provider"
        " kube-prometheus-stack syncs later (wave 40)"
    ]


def test_custom_resource_nobody_provides(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{ARGO}/apps/kustomization.yaml"][0]["resources"].remove("kube-prometheus-stack.yaml")
        del files[f"{ARGO}/apps/kube-prometheus-stack.yaml"]
        del files[f"{KPS}/kustomization.yaml"], files[f"{KPS}/values.yaml"]

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    assert messages(report, "waves") == [
        "Application web: ServiceMonitor (monitoring.coreos.com): no Application provides monitoring.coreos.com"
        " (CRD_PROVIDERS)"
    ]


def test_destination_outside_the_project(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{ARGO}/projects/media.yaml"][0]["spec"]["destinations"][0]["namespace"] = "web"

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    assert "Application web: destination namespace media is not allowed by AppProject media" in messages(
        report, "graph"
    )


def test_missing_values_file(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        del files[f"{KPS}/values.yaml"]

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    assert messages(report, "graph") == [
        f"Application kube-prometheus-stack: valueFiles $values/{KPS}/values.yaml: {KPS}/values.yaml"
        " does not exist in the tree"
    ]


def test_kustomize_build_failure(tmp_path: Path) -> None:
    def change(files: dict[str, Any]) -> None:
        files[f"{WEB}/kustomization.yaml"][0]["resources"].append("missing.yaml")

    code, report = validate(tmp_path, change, only=("graph",))
    assert code == 1
    [problem] = messages(report, "kustomize")
    assert problem.startswith(f"{WEB}: kustomize build failed:")
    assert "missing.yaml" in problem


KYVERNO_REPO = "https://kyverno.github.io/kyverno/"


def kyverno_chart(resources: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The kyverno Application as a chart release (its module is in Go's cache once the CLI is built)."""

    def change(files: dict[str, Any]) -> None:
        app = files[f"{ARGO}/apps/kyverno.yaml"][0]
        git = app["spec"].pop("source")
        helm = {"releaseName": "kyverno", "valueFiles": [f"$values/{KYVERNO}/values.yaml"]}
        chart = {"repoURL": KYVERNO_REPO, "chart": "kyverno", "targetRevision": "3.9.1", "helm": helm}
        app["spec"]["sources"] = [chart, {**git, "ref": "values"}]
        # The CRD subcharts come from Helm repositories; the values switch them off.
        values = {"crds": {"install": False}, "admissionController": {"container": {"resources": resources}}}
        files[f"{KYVERNO}/values.yaml"] = [values]
        files[f"{ARGO}/projects/platform.yaml"][0]["spec"]["sourceRepos"].append(KYVERNO_REPO)

    return change


def test_chart_rendered_from_its_module_and_validated(tmp_path: Path) -> None:
    resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "384Mi"}}
    code, report = validate(tmp_path, kyverno_chart(resources), only=("charts", "schemas"), charts={"kyverno": "3.9.1"})
    assert report["findings"] == []
    assert code == 0
    chart = next(c for c in report["stats"]["charts"] if c["chart"] == "kyverno")
    assert chart["rendered"]
    assert chart["apps"] == ["kyverno"]
    assert report["stats"]["schemas"]["by_kind"]["Deployment"] > 1


def test_invalid_object_rendered_by_a_chart(tmp_path: Path) -> None:
    resources = {"requests": {"cpu": "100m"}, "bogus": 1}
    code, report = validate(tmp_path, kyverno_chart(resources), only=("charts", "schemas"), charts={"kyverno": "3.9.1"})
    assert code == 1
    assert messages(report, "schemas") == [
        "helm template kyverno: Deployment kyverno-admission-controller: /spec/template/spec/containers/0/resources:"
        " additional properties 'bogus' not allowed"
    ]


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "  password: hunter2",
        '  adminPassword: "s3cr3t-value"',
        "token: 3f786850e387550fdab836ed7e6dc881de23001b",
        "apiKey: Zx8qP2vL9mN4rT7wK1cY5bH3",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "aws_access_key_id: AKIAIOSFODNN7EXAMPLE",
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
        "url: https://user:pa55word@git.example.com/repo.git",
    ],
)
def test_secret_scan_flags(line: str) -> None:
    assert list(vt.scan_text("f.yaml", line)), line


@pytest.mark.parametrize(
    "line",
    [
        "  existingSecret: grafana-admin-credentials",
        "  passwordKey: admin-password",
        "  secretKey: AWS_SECRET_ACCESS_KEY",
        "  password: {{ .Values.password }}",
        "  tokenSecretRef:",
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----",
        "  # password: hunter2",
        "  secretName: cert-manager-webhook-ca",
        '  "cluster/apps/web/externalsecret.yaml": "62917d93f9a9eeff898fcdc7368d0ca2bbcdd2ed636d0373916ce1a7d1e3fdd3",',
    ],
)
def test_secret_scan_leaves_references_alone(line: str) -> None:
    assert not list(vt.scan_text("f.yaml", line)), line


def test_secret_scan_reports_file_and_line_and_reads_keys_per_line() -> None:
    text = "basicAuth:\n  password:\n    name: web\n    key: password\n---\n# token: x\nadminPassword: hunter2\n"
    assert list(vt.scan_text("a/b.yaml", text)) == [("a/b.yaml", 7, "literal password assigned to adminPassword")]


def test_chart_pins_resolve_version_references(tmp_path: Path) -> None:
    charts, versions = tmp_path / "charts.yml", tmp_path / "versions.yml"
    charts.write_text('gitops_charts:\n  cilium: {repo: r, chart: cilium, version: "{{ cilium_version }}"}\n')
    versions.write_text('cilium_version: "1.20.2"\n')
    assert vt.chart_pins(charts, versions) == {"cilium": {"repo": "r", "chart": "cilium", "version": "1.20.2"}}


def test_project_globs() -> None:
    assert vt.glob_allows(["*"], "media")
    assert not vt.glob_allows(["*", "!kube-*"], "kube-system")
    assert vt.glob_allows(["media", "web-*"], "web-staging")


def test_chart_module_versions() -> None:
    assert vt.OFFLINE_CHARTS["kyverno"].module_version("3.9.1") == "v1.19.1"
    assert vt.OFFLINE_CHARTS["cilium"].module_version("1.20.2") == "v1.20.2"
    assert vt.OFFLINE_CHARTS["external-dns"].module_version("1.23.0") == "v0.23.0"
    # metrics-server's chart has its own release train: only checked pairs, nothing guessed.
    assert vt.OFFLINE_CHARTS["metrics-server"].module_version("3.13.1") == "v0.9.0"
    assert vt.OFFLINE_CHARTS["metrics-server"].module_version("3.14.0") == ""


def test_schema_release_falls_back_to_the_newest_older_one() -> None:
    names = ["v1.35.0-local-strict", "v1.36.0-local-strict", "v1.36.0-local"]
    assert vt.pick_schema_release(names, (1, 36)) == ("v1.36.0-local-strict", True)
    assert vt.pick_schema_release(names, (1, 37)) == ("v1.36.0-local-strict", False)
