# The app generator: every app of the catalog renders to a complete, policy-clean directory.
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from ansible_collections.homelab.bootstrap.plugins.module_utils import gitops_apps, gitops_tree
from ansible_collections.homelab.bootstrap.plugins.module_utils.gitops_tree import TreeError
from tests.conftest import REPO

COMPONENTS_CATALOG = yaml.safe_load((REPO / "roles/gitops/vars/main/components.yml").read_text())["gitops_catalog"]
APPS = yaml.safe_load((REPO / "roles/gitops/vars/main/apps.yml").read_text())["gitops_app_catalog"]
IMAGES_FILE = REPO / "roles/cluster_defaults/defaults/main/images.yml"
IMAGES = yaml.safe_load(IMAGES_FILE.read_text())["gitops_images"]
DEFAULTS = yaml.safe_load((REPO / "roles/gitops/defaults/main/apps.yml").read_text())
ALL_APPS = yaml.safe_load((REPO / "roles/cluster_defaults/defaults/main/cluster.yml").read_text())["homelab_apps"]
EXAMPLE = yaml.safe_load((REPO / "inventory/example/group_vars/all/cluster.yml").read_text())
SECRETS_DOC = (REPO / "docs/gitops-secrets.md").read_text()
GPU_WORKLOADS = {"plex", "jellyfin", "local-llm"}
ROOT_WORKLOADS = {"qbittorrent", "homarr"}
UNMESHED_APPS = {"arr", "arr-lts", "arr-lts2", "jellyfin", "plex", "unifi"}
POD_KINDS = ("Deployment", "StatefulSet")


def settings(apps_on: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    """Settings as the role passes them, for the example inventory with the given apps on."""
    apps = dict.fromkeys(ALL_APPS, False) if apps_on is not None else dict(ALL_APPS)
    apps.update(dict.fromkeys(apps_on or [], True))
    values = {
        "homelab_domain": EXAMPLE["homelab_domain"],
        "homelab_components": dict(EXAMPLE["homelab_components"]),
        "homelab_apps": apps,
        "gitops_images": IMAGES,
        "gitops_secret_store_name": "homelab",
        "nas_address": EXAMPLE["nas_address"],
        "nas_exports": EXAMPLE["nas_exports"],
        "cluster_pod_cidr": EXAMPLE["cluster_pod_cidr"],
        "cluster_service_cidr": EXAMPLE["cluster_service_cidr"],
        "cluster_node_cidr": EXAMPLE["cluster_node_cidr"],
        **{k: v for k, v in DEFAULTS.items() if k != "gitops_apps_portfolio_html"},
        "gitops_apps_portfolio_html": "<!DOCTYPE html><title>example.com</title>",
    }
    values.update(changes)
    return values


_RENDERED: dict[str, dict[str, str]] = {}
_PARSED: dict[int, list[tuple[str, dict[str, Any]]]] = {}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render(apps_on: list[str] | None = None, **changes: Any) -> dict[str, str]:
    """The generated files (cached: rendering is pure, and YAML dumping is the slow part)."""
    key = repr((apps_on, sorted(changes.items())))
    if key not in _RENDERED:
        s = settings(apps_on, **changes)
        entries = gitops_tree.enabled({**COMPONENTS_CATALOG, **APPS}, s["homelab_components"], s["homelab_apps"])
        _RENDERED[key] = gitops_apps.generate(APPS, entries, s)
    return _RENDERED[key]


ALL_FILES = render()


def docs_of(files: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, object) of every Kubernetes object (kustomizations left out)."""
    if id(files) not in _PARSED:
        _PARSED[id(files)] = [
            (path, doc)
            for path, text in sorted(files.items())
            for doc in yaml.load_all(text, Loader=LOADER)
            if doc and "metadata" in doc
        ]
    yield from _PARSED[id(files)]


def pods(files: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod template) of every Deployment and StatefulSet."""
    for _, doc in docs_of(files):
        if doc["kind"] in POD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def app_dirs(files: dict[str, str]) -> set[str]:
    return {p.rsplit("/", 1)[0] for p in files if not p.startswith("cluster/apps/shared/")}


# --------------------------------------------------------------------------------------------
# The catalog.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(APPS))
def test_catalog_entry_follows_the_contract(name: str) -> None:
    entry = APPS[name]
    assert set(gitops_tree.REQUIRED_FIELDS) <= set(entry)
    assert entry["component"] in ALL_APPS
    assert entry["wave"] == 30
    assert entry["project"] in ("media", "productivity", "ai", "web")
    assert entry["path"].startswith(f"cluster/apps/{entry['project']}/")
    expected_ns = "web-staging" if name == "portfolio-staging" else entry["project"]
    assert entry["namespace"] == expected_ns
    assert entry["pod_security"] in ("restricted", "baseline", "privileged")


def test_every_app_switch_has_an_entry_and_the_design_paths_exist() -> None:
    assert {e["component"] for e in APPS.values()} == set(ALL_APPS)
    paths = {e["path"] for e in APPS.values()}
    for path in (
        "cluster/apps/media/arr",
        "cluster/apps/media/arr-lts2",
        "cluster/apps/productivity/unifi-controller",
        "cluster/apps/web/portfolio/prod",
        "cluster/apps/web/portfolio/staging",
    ):
        assert path in paths
    assert APPS["portfolio-prod"]["component"] == APPS["portfolio-staging"]["component"] == "portfolio"
    assert APPS["portfolio-prod"]["project"] == APPS["portfolio-staging"]["project"] == "web"


def test_catalog_shares_no_path_with_the_platform() -> None:
    gitops_tree.check_catalog({**COMPONENTS_CATALOG, **APPS})


# --------------------------------------------------------------------------------------------
# Rendering: all apps and subsets.
# --------------------------------------------------------------------------------------------

SUBSETS = [
    pytest.param([], id="none"),
    pytest.param(["uptime_kuma"], id="uptime-kuma"),
    pytest.param(["arr", "jellyfin"], id="arr+jellyfin"),
    pytest.param(["portfolio"], id="portfolio"),
    pytest.param(["nextcloud", "collabora", "whiteboard", "elasticsearch"], id="office"),
    pytest.param(["librechat", "local_llm", "n8n", "qdrant"], id="ai"),
    pytest.param(sorted(ALL_APPS), id="all"),
]


@pytest.mark.parametrize("apps_on", SUBSETS)
def test_only_enabled_apps_have_a_directory(apps_on: list[str]) -> None:
    files = render(apps_on)
    expected = {e["path"] for e in APPS.values() if e["component"] in apps_on}
    assert app_dirs(files) == expected


@pytest.mark.parametrize("apps_on", SUBSETS)
def test_every_directory_lists_exactly_its_files(apps_on: list[str]) -> None:
    files = render(apps_on)
    dirs = {p.rsplit("/", 1)[0] for p in files}
    for directory in dirs:
        kust = yaml.safe_load(files[f"{directory}/kustomization.yaml"])
        own = {p.rsplit("/", 1)[1] for p in files if p.rsplit("/", 1)[0] == directory} - {"kustomization.yaml"}
        assert sorted(own) == kust["resources"], directory


@pytest.mark.parametrize("apps_on", SUBSETS)
def test_routes_point_at_services_of_enabled_apps(apps_on: list[str]) -> None:
    files = render(apps_on)
    services = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for _, d in docs_of(files) if d["kind"] == "Service"
    }
    routes = [d for _, d in docs_of(files) if d["kind"] == "HTTPRoute"]
    hostnames = [h for r in routes for h in r["spec"]["hostnames"]]
    assert len(hostnames) == len(set(hostnames))
    for route in routes:
        ns = route["metadata"]["namespace"]
        assert route["spec"]["parentRefs"] == [
            {"name": "shared", "namespace": "haproxy-gateway", "sectionName": "https"}
        ]
        assert all(h.endswith(".example.com") for h in route["spec"]["hostnames"])
        for ref in route["spec"]["rules"][0]["backendRefs"]:
            svc = services[(ns, ref["name"])]
            assert ref["port"] in [p["port"] for p in svc["spec"]["ports"]]


@pytest.mark.parametrize(
    ("apps_on", "library"),
    [([], False), (["portfolio"], False), (["plex"], True), (["immich"], True), (["arr_lts"], True)],
)
def test_media_library_volume_exists_only_for_apps_that_mount_it(apps_on: list[str], library: bool) -> None:
    files = render(apps_on)
    assert ("cluster/apps/shared/config/media-library.yaml" in files) is library
    if library:
        pv, pvc = list(yaml.safe_load_all(files["cluster/apps/shared/config/media-library.yaml"]))
        assert pv["spec"]["csi"]["volumeAttributes"] == {"server": "192.168.10.5", "share": "/mnt/hot/media"}
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]


def test_shared_layers_follow_their_entries() -> None:
    components = dict(EXAMPLE["homelab_components"], haproxy_gateway=False)
    files = render(["plex"], homelab_components=components)
    assert not any(p.startswith("cluster/apps/shared/ingress/") for p in files)
    assert "cluster/apps/shared/networkpolicies/media.yaml" in files
    empty = render([])
    assert yaml.safe_load(empty["cluster/apps/shared/ingress/kustomization.yaml"])["resources"] == []


# --------------------------------------------------------------------------------------------
# What every pod must satisfy.
# --------------------------------------------------------------------------------------------


def test_gpu_affinity_only_for_plex_jellyfin_and_the_local_llm() -> None:
    with_gpu = set()
    for name, pod in pods(ALL_FILES):
        spec = pod["spec"]
        if "affinity" in spec:
            with_gpu.add(name)
            terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
                {"key": "homelab.dev/gpu", "operator": "In", "values": ["true"]}
            ]
            assert spec["tolerations"] == [{"key": "homelab.dev/gpu", "operator": "Equal", "value": "true"}]
        else:
            assert "tolerations" not in spec, name
    assert with_gpu == GPU_WORKLOADS


def test_gpu_resources_go_to_the_gpu_apps_only() -> None:
    files = render(gitops_apps_gpu_resources={"nvidia.com/gpu": 1})
    for name, pod in pods(files):
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) is (name in GPU_WORKLOADS), name


def test_images_are_the_pinned_ones_and_never_latest() -> None:
    used = set()
    for name, pod in pods(ALL_FILES):
        for c in containers(pod):
            image = c["image"]
            used.add(image)
            assert image in IMAGES.values(), f"{name}: {image} is not pinned in gitops_images"
            repo, _, tag = image.rpartition(":")
            assert repo and tag and "/" not in tag and tag != "latest", image
    app_keys = {k for a in APPS.values() for w in a["workloads"].values() for k in [w.get("image")] if k}
    assert app_keys <= set(IMAGES)


def test_every_image_pin_has_a_renovate_line() -> None:
    lines = IMAGES_FILE.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^  ([a-z_]+): (\S+)$", line)
        if not match:
            continue
        repo = match.group(2).rpartition(":")[0]
        assert lines[i - 1].strip() == f"# renovate: datasource=docker depName={repo}", match.group(1)


def test_every_container_has_requests_and_a_memory_limit() -> None:
    count = 0
    for name, pod in pods(ALL_FILES):
        for c in containers(pod):
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"], f"{name}/{c['name']}"
            assert res["limits"]["memory"], f"{name}/{c['name']}"
            count += 1
    assert count >= 25


def test_every_pod_is_non_root_unless_labelled_with_a_reason() -> None:
    labelled = set()
    for name, pod in pods(ALL_FILES):
        spec, meta = pod["spec"], pod["metadata"]
        pod_level = spec["securityContext"].get("runAsNonRoot") is True
        every = all(c["securityContext"].get("runAsNonRoot") is True for c in containers(pod))
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        if meta["labels"].get("policy.homelab.dev/run-as-root") == "allowed":
            labelled.add(name)
            assert len(meta["annotations"]["policy.homelab.dev/run-as-root-reason"]) > 40
        else:
            assert pod_level or every, name
        for c in containers(pod):
            assert c["securityContext"].get("privileged") is not True
    assert labelled == ROOT_WORKLOADS


def test_capabilities_are_dropped_except_where_the_app_needs_them() -> None:
    kept = set()
    for name, pod in pods(ALL_FILES):
        for c in containers(pod):
            caps = c["securityContext"].get("capabilities", {})
            if caps.get("drop") != ["ALL"]:
                kept.add(c["name"])
            if caps.get("add"):
                assert (c["name"], caps["add"]) == ("gluetun", ["NET_ADMIN"]), name
    assert kept == {"gluetun", "homarr", "collabora"}


@pytest.mark.parametrize("linkerd", [True, False])
def test_linkerd_injection_only_where_meshed(linkerd: bool) -> None:
    components = dict(EXAMPLE["homelab_components"], linkerd=linkerd)
    files = render(homelab_components=components)
    instance_of = {}
    for name, pod in pods(files):
        app = pod["metadata"]["labels"]["app.kubernetes.io/instance"]
        instance_of[name] = app
        injected = pod["metadata"].get("annotations", {}).get("linkerd.io/inject") == "enabled"
        assert injected is (linkerd and app not in UNMESHED_APPS), name
    assert {"sonarr", "qbittorrent", "sonarr-lts2"} <= set(instance_of)


def test_hpa_targets_have_no_fixed_replicas() -> None:
    workloads = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for _, d in docs_of(ALL_FILES) if d["kind"] in POD_KINDS
    }
    hpas = [d for _, d in docs_of(ALL_FILES) if d["kind"] == "HorizontalPodAutoscaler"]
    assert {h["metadata"]["name"] for h in hpas} == {"immich-machine-learning", "n8n-worker", "portfolio"}
    for hpa in hpas:
        target = workloads[(hpa["metadata"]["namespace"], hpa["spec"]["scaleTargetRef"]["name"])]
        assert "replicas" not in target["spec"]
    prod = [
        d for _, d in docs_of(ALL_FILES) if d["kind"] == "PodDisruptionBudget" and d["metadata"]["namespace"] == "web"
    ]
    assert prod[0]["spec"]["minAvailable"] == 1


def test_every_workload_has_service_pdb_and_an_ingress_policy() -> None:
    by_kind: dict[str, set[tuple[str, str]]] = {}
    for _, d in docs_of(ALL_FILES):
        by_kind.setdefault(d["kind"], set()).add((d["metadata"].get("namespace"), d["metadata"]["name"]))
    policies = {
        (d["metadata"]["namespace"], d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name"))
        for _, d in docs_of(ALL_FILES)
        if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"]["policyTypes"]
    }
    for kind in POD_KINDS:
        for key in by_kind.get(kind, set()):
            assert key in by_kind["Service"], key
            assert key in by_kind["PodDisruptionBudget"], key
            assert key in policies, key


def test_every_app_namespace_denies_by_default_and_media_reaches_the_nas() -> None:
    for ns in ("media", "productivity", "ai", "web", "web-staging"):
        docs = list(yaml.safe_load_all(ALL_FILES[f"cluster/apps/shared/networkpolicies/{ns}.yaml"]))
        names = {d["metadata"]["name"] for d in docs}
        deny = next(d for d in docs if d["metadata"]["name"] == "default-deny")
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        assert {"allow-dns", "allow-platform-data"} <= names
        assert ("allow-nas-nfs" in names) is (ns == "media")


def test_service_monitors_follow_the_monitoring_stack() -> None:
    monitors = {d["metadata"]["name"] for _, d in docs_of(ALL_FILES) if d["kind"] == "ServiceMonitor"}
    assert monitors == {"immich", "collabora", "uptime-kuma", "whiteboard", "n8n", "qdrant"}
    components = dict(EXAMPLE["homelab_components"], kube_prometheus_stack=False)
    files = render(homelab_components=components)
    assert not [d for _, d in docs_of(files) if d["kind"] == "ServiceMonitor"]
    assert "monitoring" not in yaml.safe_dump([d for _, d in docs_of(files) if d["kind"] == "NetworkPolicy"])


# --------------------------------------------------------------------------------------------
# Secrets.
# --------------------------------------------------------------------------------------------


def external_secrets(files: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["metadata"]["namespace"], d["spec"]["target"]["name"]): d
        for _, d in docs_of(files)
        if d["kind"] == "ExternalSecret"
    }


def secret_keys(es: dict[str, Any]) -> set[str]:
    keys = {item["secretKey"] for item in es["spec"].get("data", [])}
    keys |= set(es["spec"]["target"].get("template", {}).get("data", {}))
    return keys


def test_secrets_only_as_external_secrets_and_every_reference_resolves() -> None:
    assert not [d for _, d in docs_of(ALL_FILES) if d["kind"] == "Secret"]
    made = external_secrets(ALL_FILES)
    for es in made.values():
        assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "homelab"}
    for name, pod in pods(ALL_FILES):
        ns = pod["metadata"]["labels"]["app.kubernetes.io/instance"]
        namespace = APPS[ns]["namespace"]
        for c in containers(pod):
            for env in c.get("env", []):
                ref = env["valueFrom"]["secretKeyRef"]
                es = made[(namespace, ref["name"])]
                assert es["spec"].get("dataFrom") or ref["key"] in secret_keys(es), f"{name}: {ref}"
            for source in c["envFrom"]:
                if "secretRef" in source:
                    assert (namespace, source["secretRef"]["name"]) in made


@pytest.mark.parametrize("app", sorted(n for n, a in APPS.items() if a.get("postgres")))
def test_postgres_apps_get_their_role_login(app: str) -> None:
    role = app.replace("-", "_")
    es = external_secrets(ALL_FILES)[(APPS[app]["namespace"], f"{app}-db")]
    assert es["spec"]["data"] == [
        {"secretKey": "password", "remoteRef": {"key": "homelab/postgres", "property": f"{role}-password"}}
    ]
    template = es["spec"]["target"]["template"]["data"]
    assert template["username"] == role
    assert template["uri"].startswith(f'postgresql://{role}:{{{{ index . "password" | urlquery }}}}@platform-postgres')


PLATFORM_POSTGRES = REPO / "roles/gitops/templates/tree/cluster/platform/base/storage/postgres/platform-postgres"
PLATFORM_REDIS = REPO / "roles/gitops/templates/tree/cluster/platform/base/database/redis"


def platform_docs(template: Path, apps_on: dict[str, bool], monitoring: bool = True) -> list[dict[str, Any]]:
    """A platform template that loops over the app catalog, rendered as Ansible would (trim_blocks)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    text = env.from_string(template.read_text()).render(
        gitops_app_catalog=APPS,
        gitops_catalog=COMPONENTS_CATALOG,
        homelab_apps=apps_on,
        homelab_components={**EXAMPLE["homelab_components"], "kube_prometheus_stack": monitoring},
    )
    return [d for d in yaml.safe_load_all(text) if d]


def sources(policy: dict[str, Any], port: int) -> set[str]:
    """The namespaces a NetworkPolicy lets in on a port."""
    return {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == port for p in rule.get("ports", []))
        for peer in rule["from"]
        if "namespaceSelector" in peer
    }


def test_platform_databases_create_the_extensions_dependencies_first() -> None:
    """The platform side (databases.yaml.j2) turns postgres_extensions into the Database's extensions."""
    docs = platform_docs(PLATFORM_POSTGRES / "databases.yaml.j2", ALL_APPS)
    databases = {d["spec"]["name"]: d["spec"] for d in docs}
    assert set(databases) == {n.replace("-", "_") for n, a in APPS.items() if a.get("postgres")}
    names = [e["name"] for e in databases["immich"]["extensions"]]
    assert set(names) >= {"vchord", "cube", "earthdistance"}
    assert names.index("vector") < names.index("vchord") and names.index("cube") < names.index("earthdistance")
    assert all("extensions" not in spec for name, spec in databases.items() if name != "immich")


@pytest.mark.parametrize("apps_on", [ALL_APPS, dict.fromkeys(ALL_APPS, False)], ids=["all-apps", "no-apps"])
def test_database_namespace_lets_in_exactly_the_clients(apps_on: dict[str, bool]) -> None:
    on = {n: a for n, a in APPS.items() if apps_on.get(a["component"])}
    pg = {d["metadata"]["name"]: d for d in platform_docs(PLATFORM_POSTGRES / "networkpolicies.yaml.j2", apps_on)}
    redis = {d["metadata"]["name"]: d for d in platform_docs(PLATFORM_REDIS / "networkpolicies.yaml.j2", apps_on)}
    assert pg["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    direct = {a["namespace"] for a in on.values() if a.get("postgres") and a.get("postgres_direct")}
    pooled = {a["namespace"] for a in on.values() if a.get("postgres") and not a.get("postgres_direct")}
    assert sources(pg["platform-postgres-instances"], 5432) == direct | {"cnpg-system"}
    assert sources(pg["platform-postgres-instances"], 8000) == {"cnpg-system"}
    assert sources(pg["platform-postgres-pooler-rw"], 5432) == pooled
    for kind in ("cache", "queue"):
        users = {a["namespace"] for a in on.values() if a.get("redis") == kind}
        assert sources(redis[f"redis-{kind}"], 6379) == users | {"redis-operator"}
        assert sources(redis[f"redis-{kind}"], 9121) == {"monitoring"}


def test_database_namespace_without_monitoring_has_no_metrics_rules() -> None:
    docs = platform_docs(PLATFORM_POSTGRES / "networkpolicies.yaml.j2", dict.fromkeys(ALL_APPS, False), False)
    pooler = next(d for d in docs if d["metadata"]["name"] == "platform-postgres-pooler-rw")
    assert pooler["spec"]["ingress"] == []
    docs += platform_docs(PLATFORM_REDIS / "networkpolicies.yaml.j2", ALL_APPS, False)
    assert all(not sources(d, port) for d in docs for port in (9121, 9127, 9187) if "ingress" in d["spec"])


def test_docs_list_every_store_key_and_property() -> None:
    section = SECRETS_DOC.split("## Apps", 1)[1]
    rows = set(re.findall(r"^\| `([^`]+)` \| `?([^`|]+?)`? \|", section, flags=re.MULTILINE))
    for es in external_secrets(ALL_FILES).values():
        for item in es["spec"].get("data", []):
            assert (item["remoteRef"]["key"], item["remoteRef"]["property"]) in rows, item
        for item in es["spec"].get("dataFrom", []):
            assert (item["extract"]["key"], "every property") in rows


def test_no_placeholder_is_left_in_the_output() -> None:
    for path, text in ALL_FILES.items():
        assert not re.search(r"\$\{[a-z_]+(:[^}]*)?\}", text), path


# --------------------------------------------------------------------------------------------
# Options and errors.
# --------------------------------------------------------------------------------------------


def test_overrides_change_sizes_and_addresses() -> None:
    overrides = {"plex": {"workloads": {"plex": {"volumes": {"config": {"size": "120Gi"}}}}}}
    files = render(
        ["plex", "unifi"],
        gitops_apps_overrides=overrides,
        gitops_apps_load_balancer_addresses={"unifi": "192.168.10.201"},
    )
    claim = next(
        d for _, d in docs_of(files) if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "plex-config"
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "120Gi"
    svc = next(d for _, d in docs_of(files) if d["kind"] == "Service" and d["metadata"]["name"] == "unifi")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {"metallb.universe.tf/loadBalancerIPs": "192.168.10.201"}


def test_extends_replaces_whole_fields() -> None:
    files = render(["arr"])
    radarr = next(p for n, p in pods(files) if n == "radarr")
    names = [e["name"] for e in radarr["spec"]["containers"][0]["env"]]
    assert names == ["RADARR__AUTH__APIKEY"]
    prowlarr = next(p for n, p in pods(files) if n == "prowlarr")
    assert [v["name"] for v in prowlarr["spec"]["volumes"]] == ["config"]


def broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    apps = yaml.safe_load((REPO / "roles/gitops/vars/main/apps.yml").read_text())["gitops_app_catalog"]
    node = apps
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return apps


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("vaultwarden", "workloads", "vaultwarden", "image"), "nope", "image key nope is not pinned"),
        (("vaultwarden", "workloads", "vaultwarden", "env"), {"X": "${nope}"}, r"unknown placeholder \$\{nope\}"),
        (("vaultwarden", "workloads", "vaultwarden", "replica"), 2, "unknown field"),
        (("vaultwarden", "workloads", "vaultwarden", "probe"), None, "needs a probe"),
        (("vaultwarden", "workloads", "vaultwarden", "resources"), {"cpu": "1"}, "memory_limit"),
        (("vaultwarden", "workloads", "vaultwarden", "mounts"), {"cache": "/c"}, "unknown volume cache"),
        (("vaultwarden", "workloads", "vaultwarden", "extends"), "nope.x", "names no workload"),
        (("homarr", "workloads", "homarr", "root_reason"), None, "say why in root_reason"),
        (("vaultwarden", "redis"), "sessions", "cache or queue"),
        (("plex", "postgres_extensions"), ["pg_trgm"], "needs postgres: true"),
        (("immich", "postgres_extensions"), "vchord", "list of extension names"),
    ],
)
def test_catalog_mistakes_are_reported(path: tuple[str, ...], value: Any, message: str) -> None:
    apps = broken(path, value)
    s = settings([APPS[path[0]]["component"]])
    entries = gitops_tree.enabled({**COMPONENTS_CATALOG, **apps}, s["homelab_components"], s["homelab_apps"])
    with pytest.raises(TreeError, match=message):
        gitops_apps.generate(apps, entries, s)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"plex": {"namespace": "default"}}, "cannot change namespace"),
        ({"plex": {"postgres": True}}, "cannot change postgres"),
        ({"plexx": {}}, "no app of that name"),
    ],
)
def test_overrides_cannot_break_the_contract(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TreeError, match=message):
        render(gitops_apps_overrides=overrides)


def test_yaml_has_no_aliases_and_is_stable() -> None:
    assert not any("&id0" in text for text in ALL_FILES.values())
    assert render() == ALL_FILES


def test_docs_describe_adding_an_app() -> None:
    text = (REPO / "docs/gitops.md").read_text()
    assert "## Adding an app" in text
    for field in ("workloads", "route", "extends", "gitops_apps_overrides", "root_reason"):
        assert field in text.split("## Adding an app", 1)[1]


def test_every_path_renders_from_the_example_defaults() -> None:
    assert Path(REPO / "roles/gitops/vars/main/apps.yml").is_file()
    assert len(app_dirs(ALL_FILES)) == len(APPS)
