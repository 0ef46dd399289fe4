# The generated part of the GitOps tree: Applications, AppProjects, Namespaces, kustomizations.
"""Build the ArgoCD wiring of the GitOps tree from the catalog, so it is consistent by construction.

Pure functions (no Ansible, no I/O): `generate()` takes the catalog and the settings and
returns {relative path: file content}. The action plugin homelab.bootstrap.gitops_tree merges
the result with the rendered templates and the generated app directories.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

HEADER = (
    "# Managed by homelab-bootstrap (roles/gitops): regenerated from the inventory on every run.\n"
    "# Change the inventory, not this file; the run stops instead of overwriting your edits.\n"
)
ARGOCD_NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"
ARGOCD_DIR = "cluster/platform/gitops/argocd"
ROOT_DIR = "cluster/bootstrap/root-application"
NAMESPACES_DIR = "cluster/platform/base/namespaces"
POD_SECURITY_DIR = "cluster/platform/base/security/pod-security"
ROOT_APP = "root"
# Namespaces Kubernetes itself owns: never declared (and never pruned) by the tree.
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
PSA_ORDER = ("restricted", "baseline", "privileged")
PROJECTS = ("platform", "media", "productivity", "ai", "web")
REQUIRED_FIELDS = ("component", "path", "namespace", "project", "wave")


class TreeError(ValueError):
    """The catalog or the settings cannot make a consistent tree; the message says what to fix."""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (patches, scripts, configs) as literal blocks, readable in Git."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(*documents: Mapping[str, Any], header: str = HEADER) -> str:
    """YAML documents as the tree stores them: block style, keys in the order given."""
    body = "---\n".join(
        yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120) for doc in documents
    )
    return f"{header}---\n{body}"


def kustomization(resources: Iterable[str], components: Iterable[str] = ()) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(resources),
    }
    comps = sorted(components)
    if comps:
        doc["components"] = comps
    return dump(doc)


def check_catalog(catalog: Mapping[str, Mapping[str, Any]]) -> None:
    """Every entry complete, paths unique, projects known."""
    paths: dict[str, str] = {}
    for name, entry in catalog.items():
        missing = [f for f in REQUIRED_FIELDS if f not in entry]
        if missing:
            raise TreeError(f"gitops catalog entry {name} lacks {', '.join(missing)}")
        if entry["project"] not in PROJECTS:
            raise TreeError(f"gitops catalog entry {name}: project {entry['project']} is not one of {PROJECTS}")
        other = paths.setdefault(entry["path"], name)
        if other != name:
            raise TreeError(f"gitops catalog entries {other} and {name} share the path {entry['path']}")


def enabled(
    catalog: Mapping[str, Mapping[str, Any]], components: Mapping[str, Any], apps: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The catalog entries whose toggle is on (a toggle left out of the inventory counts as off)."""
    switches = {**{k: bool(v) for k, v in components.items()}, **{k: bool(v) for k, v in apps.items()}}
    return {
        name: dict(entry)
        for name, entry in catalog.items()
        if entry["component"] == "always" or switches.get(entry["component"], False)
    }


def custom_entries(custom: Mapping[str, str], catalog: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Catalog entries for the user's own apps (gitops_custom_apps: name -> area)."""
    entries: dict[str, dict[str, Any]] = {}
    for name, area in custom.items():
        if area not in PROJECTS or area == "platform":
            raise TreeError(f"gitops_custom_apps.{name}: area {area} is not one of media, productivity, ai, web")
        if name in catalog:
            raise TreeError(f"gitops_custom_apps.{name}: the tree already has an Application of that name")
        entries[name] = {
            "component": "always",
            "path": f"cluster/apps/{area}/{name}",
            "namespace": area,
            "project": area,
            "wave": 30,
            "custom": True,
        }
    return entries


def owner_of(path: str, catalog: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The catalog entry whose directory is the longest prefix of path, if any."""
    best: tuple[int, str | None] = (-1, None)
    for name, entry in catalog.items():
        root = entry["path"].rstrip("/") + "/"
        if path.startswith(root) and len(root) > best[0]:
            best = (len(root), name)
    return best[1]


def chart_repo_url(repo: str, settings: Mapping[str, Any]) -> str:
    """Where ArgoCD fetches a chart repository: upstream, or with download_mirror_url set, the
    mirror's copy at <mirror>/<upstream host>/<upstream path> (the layout of every download)."""
    mirror = str(settings.get("download_mirror_url") or "").rstrip("/")
    scheme, sep, rest = repo.partition("://")
    if not mirror or not sep or scheme not in ("http", "https"):
        return repo
    return f"{mirror}/{rest}"


def application(name: str, entry: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """One ArgoCD Application: the entry's directory, plus its chart when it has one."""
    repo = settings["gitops_repo_url"]
    branch = settings["gitops_repo_branch"]
    git_source: dict[str, Any] = {"repoURL": repo, "targetRevision": branch, "path": entry["path"]}
    if entry.get("chart"):
        chart = settings["gitops_charts"][entry["chart"]]
        chart_source = {
            "repoURL": chart_repo_url(chart["repo"], settings),
            "chart": chart["chart"],
            "targetRevision": str(chart["version"]),
            "helm": {
                "releaseName": entry.get("release", name),
                "valueFiles": [f"$values/{entry['path']}/values.yaml"],
            },
        }
        source_spec: dict[str, Any] = {"sources": [chart_source, {**git_source, "ref": "values"}]}
    else:
        source_spec = {"source": git_source}
    sync_options = ["ServerSideApply=true", "SkipDryRunOnMissingResource=true"]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ARGOCD_NAMESPACE,
        "annotations": {"argocd.argoproj.io/sync-wave": str(entry["wave"])},
    }
    if entry.get("keep"):
        # Cilium and ArgoCD itself: removing the Application must not take the cluster's
        # network or its GitOps controller with it, so no cascading finalizer and no prune.
        sync_options.append("Prune=false")
    else:
        # Cascading deletion, foreground. The path-qualified name ArgoCD also accepts: the plain
        # one draws a warning from the API server on every apply (Kubernetes >= 1.35).
        metadata["finalizers"] = ["resources-finalizer.argocd.argoproj.io/foreground"]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": metadata,
        "spec": {
            "project": entry["project"],
            "destination": {"server": IN_CLUSTER, "namespace": entry["namespace"]},
            **source_spec,
            "syncPolicy": {
                "automated": {"prune": not entry.get("keep", False), "selfHeal": True},
                "syncOptions": sync_options,
                "retry": {"limit": 10, "backoff": {"duration": "15s", "factor": 2, "maxDuration": "5m"}},
            },
        },
    }


def entry_namespaces(entry: Mapping[str, Any]) -> list[str]:
    return [entry["namespace"], *entry.get("namespaces", [])]


def app_project(project: str, entries: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """An AppProject allowing exactly the repositories and namespaces its Applications use."""
    members = {n: e for n, e in entries.items() if e["project"] == project}
    repos = {settings["gitops_repo_url"]}
    charts = settings["gitops_charts"]
    repos.update(chart_repo_url(charts[e["chart"]]["repo"], settings) for e in members.values() if e.get("chart"))
    # Namespaces a chart creates itself (chart_namespaces) are destinations too, but get no
    # Namespace object of the tree's: two Applications would own it.
    namespaces = sorted({ns for e in members.values() for ns in [*entry_namespaces(e), *e.get("chart_namespaces", [])]})
    spec: dict[str, Any] = {
        "description": f"homelab {project}: {len(members)} applications",
        "sourceRepos": sorted(repos),
        "destinations": [{"server": IN_CLUSTER, "namespace": ns} for ns in namespaces],
    }
    if project == "platform":
        # The platform installs CRDs, cluster roles, webhooks and the tree's own ArgoCD objects.
        spec["destinations"].append({"server": IN_CLUSTER, "namespace": ARGOCD_NAMESPACE})
        spec["clusterResourceWhitelist"] = [{"group": "*", "kind": "*"}]
    else:
        # Apps stay inside their namespaces: no cluster-scoped objects at all.
        spec["clusterResourceWhitelist"] = []
    unique = {d["namespace"]: d for d in spec["destinations"]}
    spec["destinations"] = [unique[ns] for ns in sorted(unique)]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {
            "name": project,
            "namespace": ARGOCD_NAMESPACE,
            # Projects exist before the Applications that name them.
            "annotations": {"argocd.argoproj.io/sync-wave": "-30"},
        },
        "spec": spec,
    }


def root_application(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The app of apps: syncs the AppProjects and Applications (and itself) from Git."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": ROOT_APP, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": "platform",
            "destination": {"server": IN_CLUSTER, "namespace": ARGOCD_NAMESPACE},
            "source": {
                "repoURL": settings["gitops_repo_url"],
                "targetRevision": settings["gitops_repo_branch"],
                "path": ARGOCD_DIR,
            },
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["ServerSideApply=true"]},
        },
    }


def namespace_levels(entries: Mapping[str, Mapping[str, Any]], default_level: str) -> dict[str, str]:
    """PodSecurity level per namespace: the most permissive one any of its entries needs."""
    levels: dict[str, str] = {}
    for entry in entries.values():
        for ns in entry_namespaces(entry):
            if ns in SYSTEM_NAMESPACES:
                continue
            wanted = entry.get("pod_security", default_level) if ns == entry["namespace"] else default_level
            if wanted not in PSA_ORDER:
                raise TreeError(f"pod_security {wanted} of namespace {ns} is not one of {PSA_ORDER}")
            current = levels.get(ns, PSA_ORDER[0])
            levels[ns] = max(current, wanted, key=PSA_ORDER.index)
    return dict(sorted(levels.items()))


def namespace_files(levels: Mapping[str, str], projects: Mapping[str, str], pod_security: bool) -> dict[str, str]:
    files: dict[str, str] = {}
    for ns in levels:
        doc = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {"app.kubernetes.io/part-of": "homelab", "homelab.dev/area": projects[ns]},
            },
        }
        files[f"{NAMESPACES_DIR}/{ns}.yaml"] = dump(doc)
    comps = [posixpath.relpath(POD_SECURITY_DIR, NAMESPACES_DIR)] if pod_security else []
    files[f"{NAMESPACES_DIR}/kustomization.yaml"] = kustomization([f"{ns}.yaml" for ns in levels], comps)
    if pod_security:
        files[f"{POD_SECURITY_DIR}/kustomization.yaml"] = pod_security_component(levels)
    return files


def pod_security_component(levels: Mapping[str, str]) -> str:
    """A kustomize Component that labels each namespace with its PodSecurity level.

    Enforce the level the namespace needs; audit and warn against `restricted` everywhere, so
    every workload that could be tightened shows up.
    """
    patches = []
    for ns, level in levels.items():
        labels = {
            "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        patch = dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}, header="")
        patches.append({"target": {"kind": "Namespace", "name": ns}, "patch": patch.removeprefix("---\n")})
    doc = {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "patches": patches}
    return dump(doc)


def generate(catalog: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, str]:
    """All generated files of the tree for the enabled catalog entries."""
    if not settings.get("gitops_repo_url"):
        raise TreeError("gitops_repo_url is empty: set the Git URL ArgoCD syncs from in your inventory")
    check_catalog(catalog)
    entries = enabled(catalog, settings["homelab_components"], settings["homelab_apps"])
    for name, entry in entries.items():
        chart = entry.get("chart")
        if chart and chart not in settings["gitops_charts"]:
            raise TreeError(f"gitops catalog entry {name} uses chart {chart}, which gitops_charts does not pin")
    files: dict[str, str] = {}
    apps_dir = f"{ARGOCD_DIR}/apps"
    for name, entry in entries.items():
        files[f"{apps_dir}/{name}.yaml"] = dump(application(name, entry, settings))
    files[f"{apps_dir}/kustomization.yaml"] = kustomization(f"{n}.yaml" for n in entries)
    used_projects = sorted({e["project"] for e in entries.values()})
    for project in used_projects:
        files[f"{ARGOCD_DIR}/projects/{project}.yaml"] = dump(app_project(project, entries, settings))
    files[f"{ARGOCD_DIR}/projects/kustomization.yaml"] = kustomization(f"{p}.yaml" for p in used_projects)
    files[f"{ROOT_DIR}/root-app.yaml"] = dump(root_application(settings))
    files[f"{ROOT_DIR}/kustomization.yaml"] = kustomization(["root-app.yaml"])
    files[f"{ARGOCD_DIR}/kustomization.yaml"] = kustomization(
        ["apps", "projects", posixpath.relpath(ROOT_DIR, ARGOCD_DIR)]
    )
    levels = namespace_levels(entries, settings.get("gitops_pod_security_default", "baseline"))
    # A namespace's area is the project of the entries that live in it; the shared app-layer
    # entries only add objects to namespaces that belong to some app area.
    projects = {e["namespace"]: e["project"] for e in entries.values()}
    for entry in entries.values():
        for ns in entry.get("namespaces", []):
            projects.setdefault(ns, "apps")
    pod_security = bool(settings["homelab_components"].get("pod_security", False))
    files.update(namespace_files(levels, projects, pod_security))
    return files
