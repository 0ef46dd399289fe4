# The app directories of the GitOps tree (cluster/apps/<area>/<app>/), generated from the app catalog.
"""Generate every enabled app's manifests from its catalog entry (roles/gitops/vars/main/apps.yml).

Pure functions, data in and data out: `generate()` takes the app catalog, the enabled catalog
entries and the settings, and returns {path in the tree: file content}. Besides the app
directories it writes the shared app layer (cluster/apps/shared/): a settings ConfigMap and
NetworkPolicies per app namespace, the NAS media library volume, and one HTTPRoute per web UI.
The field reference is docs/gitops.md, "Adding an app".
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ansible_collections.homelab.bootstrap.plugins.module_utils.gitops_tree import (
    HEADER,
    TreeError,
    dump,
    kustomization,
)

SHARED_CONFIG = "apps-shared-config"
SHARED_INGRESS = "apps-shared-ingress"
SHARED_NETPOL = "apps-shared-networkpolicies"
GATEWAY = {"name": "shared", "namespace": "haproxy-gateway", "sectionName": "https"}
GATEWAY_NAMESPACE = "haproxy-gateway"
MONITORING_NAMESPACE = "monitoring"
DATABASE_NAMESPACE = "database"
LINKERD_NAMESPACE = "linkerd"
LINKERD_VIZ_NAMESPACE = "linkerd-viz"
POSTGRES_POOLER = "platform-postgres-pooler-rw.database.svc"
POSTGRES_PRIMARY = "platform-postgres-rw.database.svc"
REDIS_HOSTS = {"cache": "redis-cache-master.database.svc", "queue": "redis-queue-master.database.svc"}
SHARED_SETTINGS = "homelab-shared"
MEDIA_LIBRARY = "media-library"
MEDIA_NAMESPACE = "media"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
# Linkerd's proxy: inbound port (meshed clients connect to it), admin/metrics, tap.
LINKERD_INBOUND, LINKERD_ADMIN, LINKERD_TAP = 4143, 4191, 4190
ROOT_LABEL = "policy.homelab.dev/run-as-root"
ROOT_REASON = "policy.homelab.dev/run-as-root-reason"
# Catalog fields that belong to the shared catalog contract; overrides may not change them
# (the ArgoCD wiring and the platform's database loop read them from the catalog as written).
CONTRACT_FIELDS = frozenset({"component", "path", "namespace", "project", "wave", "pod_security", "postgres"})
APP_FIELDS = frozenset(
    {
        *CONTRACT_FIELDS, "meshed", "postgres_direct", "postgres_extensions", "redis", "redis_db", "secrets",
        "workloads", "namespaces",
    }
)  # fmt: skip
CONTAINER_FIELDS = frozenset(
    {
        "image", "command", "args", "env", "env_from_secret", "ports", "probe", "resources", "mounts",
        "root", "capabilities", "keep_capabilities", "privilege_escalation", "read_only_root", "run_as",
    }
)  # fmt: skip
WORKLOAD_FIELDS = frozenset(
    {
        *CONTAINER_FIELDS, "kind", "replicas", "hpa", "volumes", "files", "sidecars", "route", "host", "metrics",
        "gpu", "allow_from", "allow_from_namespace", "egress_lan", "load_balancer", "sysctls", "root_reason",
        "fs_group",
    }
)  # fmt: skip
PLACEHOLDER = re.compile(r"\$\{([a-z_]+)(?::([A-Za-z0-9_.-]+))?\}")


@dataclass(frozen=True)
class Context:
    """What the generator needs from the settings, read once."""

    domain: str
    store: str
    images: Mapping[str, str]
    values: Mapping[str, str]
    media_uid: int
    media_gid: int
    gpu_label: str
    gpu_resources: Mapping[str, Any]
    lb_addresses: Mapping[str, str]
    linkerd: bool
    monitoring: bool
    nas_address: str
    nas_share: str
    nfs_version: str


def context(settings: Mapping[str, Any]) -> Context:
    components = settings.get("homelab_components") or {}
    domain = str(settings["homelab_domain"])
    values = {
        "domain": domain,
        "timezone": str(settings.get("gitops_apps_timezone", "Etc/UTC")),
        "pod_cidr": str(settings.get("cluster_pod_cidr", "")),
        "service_cidr": str(settings.get("cluster_service_cidr", "")),
        "node_cidr": str(settings.get("cluster_node_cidr", "")),
        # Every network of the cluster (pods, services, nodes), comma-separated: what a VPN
        # sidecar must keep off its tunnel.
        "cluster_cidrs": ",".join(
            str(c)
            for key in ("cluster_pod_cidr", "cluster_service_cidr", "cluster_node_cidr")
            if (c := settings.get(key))
        ),
        "postgres_host": POSTGRES_POOLER,
        "postgres_direct_host": POSTGRES_PRIMARY,
        "redis_cache_host": REDIS_HOSTS["cache"],
        "redis_queue_host": REDIS_HOSTS["queue"],
        "portfolio_html": str(settings.get("gitops_apps_portfolio_html", "")),
    }
    return Context(
        domain=domain,
        store=str(settings.get("gitops_secret_store_name", "homelab")),
        images=settings.get("gitops_images") or {},
        values=values,
        media_uid=int(settings.get("gitops_apps_media_uid", 1000)),
        media_gid=int(settings.get("gitops_apps_media_gid", 1000)),
        gpu_label=str(settings.get("gitops_apps_gpu_label", "homelab.dev/gpu")),
        gpu_resources=settings.get("gitops_apps_gpu_resources") or {},
        lb_addresses=settings.get("gitops_apps_load_balancer_addresses") or {},
        linkerd=bool(components.get("linkerd", False)),
        monitoring=bool(components.get("kube_prometheus_stack", False)),
        nas_address=str(settings.get("nas_address", "")),
        nas_share=str((settings.get("nas_exports") or {}).get("media", "")),
        nfs_version=str(settings.get("gitops_nas_nfs_version", "4.1")),
    )


# --------------------------------------------------------------------------------------------
# The catalog: overrides, checks, placeholders.
# --------------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_overrides(apps: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The catalog with gitops_apps_overrides merged in (sizes, resources, env, replicas...)."""
    result = {name: copy.deepcopy(dict(app)) for name, app in apps.items()}
    for name, override in overrides.items():
        if name not in result:
            raise TreeError(f"gitops_apps_overrides.{name}: no app of that name in the catalog")
        fixed = sorted(CONTRACT_FIELDS & set(override))
        if fixed:
            raise TreeError(f"gitops_apps_overrides.{name} cannot change {', '.join(fixed)} (the catalog contract)")
        result[name] = deep_merge(result[name], override)
    return result


def resolve_extends(catalog: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workloads with `extends: <app>.<workload>` start from that workload, field by field.

    Shallow on purpose (like a YAML merge key): a field given here replaces the base's whole
    field, so Radarr's env does not inherit Sonarr's API key; null drops a field.
    """

    def base_of(ref: str, seen: tuple[str, ...]) -> dict[str, Any]:
        app, _, workload = ref.partition(".")
        try:
            spec = catalog[app]["workloads"][workload]
        except (KeyError, TypeError):
            raise TreeError(f"extends: {ref} names no workload of the catalog") from None
        if ref in seen:
            raise TreeError(f"extends: cycle through {', '.join(seen)}")
        return resolved(spec, (*seen, ref))

    def resolved(spec: Mapping[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
        if "extends" not in spec:
            return dict(spec)
        base = base_of(str(spec["extends"]), seen)
        return {**base, **{k: v for k, v in spec.items() if k != "extends"}}

    result = {}
    for name, app in catalog.items():
        workloads = {w: resolved(spec, (f"{name}.{w}",)) for w, spec in (app.get("workloads") or {}).items()}
        result[name] = {**app, "workloads": workloads}
    return result


def present(spec: Mapping[str, Any], key: str) -> Any:
    """A field's value; null (used in YAML merges to drop an inherited field) counts as absent."""
    return spec.get(key)


def check_app(name: str, app: Mapping[str, Any], ctx: Context) -> None:
    unknown = sorted(set(app) - APP_FIELDS)
    if unknown:
        raise TreeError(f"app {name}: unknown field(s) {', '.join(unknown)}")
    if not app.get("workloads"):
        raise TreeError(f"app {name} has no workloads")
    for wname, wl in app["workloads"].items():
        where = f"app {name}, workload {wname}"
        unknown = sorted(set(wl) - WORKLOAD_FIELDS)
        if unknown:
            raise TreeError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for cname, container in (wl.get("sidecars") or {}).items():
            unknown = sorted(set(container) - CONTAINER_FIELDS)
            if unknown:
                raise TreeError(f"{where}, sidecar {cname}: unknown field(s) {', '.join(unknown)}")
        for spec in [wl, *(wl.get("sidecars") or {}).values()]:
            if spec.get("image") not in ctx.images:
                raise TreeError(f"{where}: image key {spec.get('image')} is not pinned in gitops_images")
        if wl.get("kind", "Deployment") not in ("Deployment", "StatefulSet"):
            raise TreeError(f"{where}: kind must be Deployment or StatefulSet")
    if app.get("redis") not in (None, "cache", "queue"):
        raise TreeError(f"app {name}: redis must be cache or queue")
    check_extensions(name, app)


def check_extensions(name: str, app: Mapping[str, Any]) -> None:
    """postgres_extensions: names the platform creates in the app's own database."""
    extensions = app.get("postgres_extensions")
    if extensions is None:
        return
    if not app.get("postgres"):
        raise TreeError(f"app {name}: postgres_extensions needs postgres: true")
    if not isinstance(extensions, list) or not all(isinstance(e, str) and e for e in extensions):
        raise TreeError(f"app {name}: postgres_extensions must be a list of extension names")


def substitute(value: Any, ctx: Context, where: str, secret_refs: bool = False) -> Any:
    """Expand ${name} placeholders in strings (recursively); ${secret:key} only in secret templates."""
    if isinstance(value, Mapping):
        return {k: substitute(v, ctx, where, secret_refs) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, ctx, where, secret_refs) for v in value]
    if not isinstance(value, str):
        return value

    def expand(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "secret" and secret_refs and arg:
            return '{{ index . "' + arg + '" | urlquery }}'
        if arg is None and name in ctx.values:
            return ctx.values[name]
        raise TreeError(f"{where}: unknown placeholder {match.group(0)}")

    return PLACEHOLDER.sub(expand, value)


# --------------------------------------------------------------------------------------------
# Small builders.
# --------------------------------------------------------------------------------------------


def labels(app: str, workload: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": workload,
        "app.kubernetes.io/instance": app,
        "app.kubernetes.io/part-of": "homelab",
    }


def selector(app: str, workload: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": workload, "app.kubernetes.io/instance": app}


def meta(name: str, namespace: str, app: str, workload: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(app, workload or app)}


def ports_of(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> {port, protocol} of a container."""
    result: dict[str, dict[str, Any]] = {}
    for pname, port in (spec.get("ports") or {}).items():
        item = port if isinstance(port, Mapping) else {"port": port}
        result[pname] = {"port": int(item["port"]), "protocol": item.get("protocol", "TCP")}
    return result


def pvc_volumes(wl: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: v for n, v in (wl.get("volumes") or {}).items() if "size" in v}


def uses_library(app: Mapping[str, Any]) -> bool:
    return any(v.get("library") for wl in app["workloads"].values() for v in (wl.get("volumes") or {}).values())


def image_of(spec: Mapping[str, Any], ctx: Context) -> str:
    return str(ctx.images[spec["image"]])


def resources(spec: Mapping[str, Any], where: str, gpu: Mapping[str, Any] | None = None) -> dict[str, Any]:
    res = spec.get("resources") or {}
    if not {"cpu", "memory", "memory_limit"} <= set(res):
        raise TreeError(f"{where}: resources need cpu, memory and memory_limit, got {sorted(res)}")
    # No CPU limit by default: throttling a busy app adds latency and frees nothing useful
    # (the platform's Kyverno policy asks for requests and a memory limit).
    limits: dict[str, Any] = {"memory": str(res["memory_limit"])}
    if res.get("cpu_limit"):
        limits["cpu"] = str(res["cpu_limit"])
    for name, count in (gpu or {}).items():
        limits[str(name)] = count
    return {"requests": {"cpu": str(res["cpu"]), "memory": str(res["memory"])}, "limits": limits}


def probe_handler(probe: Mapping[str, Any], ports: Mapping[str, Any], ctx: Context, where: str) -> dict[str, Any]:
    first = next(iter(ports), None)
    if "http" in probe:
        port = probe.get("port", first)
        get: dict[str, Any] = {"path": probe["http"], "port": port}
        if probe.get("host"):
            get["httpHeaders"] = [{"name": "Host", "value": substitute(probe["host"], ctx, where)}]
        return {"httpGet": get}
    if "tcp" in probe:
        return {"tcpSocket": {"port": probe["tcp"]}}
    if "exec" in probe:
        return {"exec": {"command": list(probe["exec"])}}
    raise TreeError(f"{where}: probe needs http, tcp or exec")


def probes(spec: Mapping[str, Any], ctx: Context, where: str, required: bool) -> dict[str, Any]:
    probe = spec.get("probe")
    if not probe:
        if required:
            raise TreeError(f"{where}: the app container needs a probe")
        return {}
    handler = probe_handler(probe, ports_of(spec), ctx, where)
    startup = int(probe.get("startup_seconds", 60))
    return {
        # Startup gives slow first starts (migrations, model downloads) their time once; after
        # that liveness restarts a hung process and readiness takes it out of the Service.
        "startupProbe": {**handler, "periodSeconds": 10, "failureThreshold": max(1, startup // 10)},
        "livenessProbe": {**handler, "periodSeconds": 30, "timeoutSeconds": 5, "failureThreshold": 5},
        "readinessProbe": {**handler, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def container_security(spec: Mapping[str, Any]) -> dict[str, Any]:
    if spec.get("root"):
        # Root by necessity (reason on the pod): keep the runtime's default capabilities the
        # image's entrypoint relies on, add only what is listed.
        sec: dict[str, Any] = {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False}
        if spec.get("capabilities"):
            sec["capabilities"] = {"add": list(spec["capabilities"])}
        return sec
    sec = {"runAsNonRoot": True, "allowPrivilegeEscalation": bool(spec.get("privilege_escalation", False))}
    if not spec.get("keep_capabilities"):
        sec["capabilities"] = {
            "drop": ["ALL"],
            **({"add": list(spec["capabilities"])} if spec.get("capabilities") else {}),
        }
    if spec.get("read_only_root"):
        sec["readOnlyRootFilesystem"] = True
    return sec


def env_list(spec: Mapping[str, Any], where: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Plain variables (for the ConfigMap) and secret references (env entries)."""
    plain: dict[str, str] = {}
    secret: list[dict[str, Any]] = []
    for name, value in (spec.get("env") or {}).items():
        if isinstance(value, Mapping):
            if set(value) != {"secret", "key"}:
                raise TreeError(f"{where}: env {name} must be a string or {{secret, key}}")
            ref = {"name": value["secret"], "key": value["key"]}
            secret.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
        elif value is not None:
            plain[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return plain, secret


# --------------------------------------------------------------------------------------------
# One app.
# --------------------------------------------------------------------------------------------


@dataclass
class AppBuild:
    """The objects of one app directory, grouped by the file they go to."""

    name: str
    namespace: str
    files: dict[str, list[dict[str, Any]]]
    headers: dict[str, list[str]]

    def add(self, file: str, doc: dict[str, Any]) -> None:
        self.files.setdefault(file, []).append(doc)

    def note(self, file: str, line: str) -> None:
        self.headers.setdefault(file, []).append(line)


def external_secret(name: str, namespace: str, app: str, spec: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    key = spec.get("key", f"homelab/{app}")
    body: dict[str, Any] = {
        "refreshInterval": "1h",
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": ctx.store},
        "target": {"name": name, "creationPolicy": "Owner"},
    }
    if spec.get("extract"):
        body["dataFrom"] = [{"extract": {"key": key}}]
    data = spec.get("data") or {}
    if data:
        body["data"] = [{"secretKey": skey, "remoteRef": {"key": key, "property": prop}} for skey, prop in data.items()]
    template = spec.get("template") or {}
    if template:
        rendered = {skey: '{{ index . "' + skey + '" }}' for skey in data}
        rendered.update(substitute(dict(template), ctx, f"secret {name}", secret_refs=True))
        body["target"]["template"] = {"engineVersion": "v2", "data": rendered}
    if not (data or spec.get("extract")):
        raise TreeError(f"secret {name} of {app} reads nothing: give it data or extract")
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": meta(name, namespace, app),
        "spec": body,
    }


def platform_secrets(name: str, app: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Postgres and Redis credentials an app asks for, as ExternalSecret specs."""
    specs: dict[str, dict[str, Any]] = {}
    if app.get("postgres"):
        role = name.replace("-", "_")
        host = "${postgres_direct_host}" if app.get("postgres_direct") else "${postgres_host}"
        specs[f"{name}-db"] = {
            "key": "homelab/postgres",
            "data": {"password": f"{role}-password"},
            "template": {"username": role, "uri": f"postgresql://{role}:${{secret:password}}@{host}:5432/{role}"},
        }
    if app.get("redis"):
        host = "${redis_" + app["redis"] + "_host}"
        specs[f"{name}-redis"] = {
            "key": "homelab/redis",
            "data": {"password": "password"},
            "template": {"url": f"redis://:${{secret:password}}@{host}:6379/{int(app.get('redis_db', 0))}"},
        }
    return specs


def config_map(name: str, namespace: str, app: str, workload: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, namespace, app, workload),
        "data": dict(data),
    }


def file_data(wl: Mapping[str, Any], ctx: Context, where: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """ConfigMap data and the mounts (one subPath per file) of a workload's `files`."""
    data: dict[str, str] = {}
    mounts: list[dict[str, Any]] = []
    for path, content in (wl.get("files") or {}).items():
        key = posixpath.basename(path)
        if key in data:
            raise TreeError(f"{where}: two files named {key}")
        value = substitute(content, ctx, where)
        data[key] = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False)
        mounts.append({"name": "files", "mountPath": path, "subPath": key, "readOnly": True})
    return data, mounts


def volume_mounts(spec: Mapping[str, Any], volumes: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    mounts = []
    for vname, target in (spec.get("mounts") or {}).items():
        if vname not in volumes:
            raise TreeError(f"{where}: mount of unknown volume {vname}")
        item = target if isinstance(target, Mapping) else {"path": target}
        mount: dict[str, Any] = {"name": vname, "mountPath": item["path"]}
        if item.get("sub_path"):
            mount["subPath"] = item["sub_path"]
        if item.get("read_only"):
            mount["readOnly"] = True
        mounts.append(mount)
    return mounts


def container(
    cname: str,
    spec: Mapping[str, Any],
    *,
    env_cm: str | None,
    wl: Mapping[str, Any],
    ctx: Context,
    where: str,
    main: bool,
) -> dict[str, Any]:
    _, secret_env = env_list(spec, where)
    c: dict[str, Any] = {"name": cname, "image": image_of(spec, ctx)}
    for key in ("command", "args"):
        if spec.get(key):
            c[key] = [str(a) for a in spec[key]]
    ports = ports_of(spec)
    if ports:
        c["ports"] = [{"name": n, "containerPort": p["port"], "protocol": p["protocol"]} for n, p in ports.items()]
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": SHARED_SETTINGS, "optional": True}}]
    if env_cm:
        env_from.append({"configMapRef": {"name": env_cm}})
    if spec.get("env_from_secret"):
        env_from.append({"secretRef": {"name": spec["env_from_secret"]}})
    c["envFrom"] = env_from
    if secret_env:
        c["env"] = secret_env
    # The GPU (a device plugin's resource, when configured) goes to the app container only.
    gpu = ctx.gpu_resources if (wl.get("gpu") and main) else None
    c["resources"] = resources(spec, where, gpu)
    c.update(probes(spec, ctx, where, required=main))
    c["securityContext"] = container_security(spec)
    mounts = volume_mounts(spec, wl.get("volumes") or {}, where)
    if mounts:
        c["volumeMounts"] = mounts
    return c


def pod_volumes(wname: str, wl: Mapping[str, Any], statefulset: bool, has_files: bool) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = []
    for vname, vol in (wl.get("volumes") or {}).items():
        if "size" in vol:
            if not statefulset:  # a StatefulSet's claims come from its volumeClaimTemplates
                vols.append({"name": vname, "persistentVolumeClaim": {"claimName": f"{wname}-{vname}"}})
        elif vol.get("library"):
            vols.append({"name": vname, "persistentVolumeClaim": {"claimName": MEDIA_LIBRARY}})
        elif "empty" in vol:
            vols.append({"name": vname, "emptyDir": {"sizeLimit": str(vol["empty"])}})
        else:
            raise TreeError(f"workload {wname}: volume {vname} needs size, library or empty")
    if has_files:
        vols.append({"name": "files", "configMap": {"name": f"{wname}-files"}})
    return vols


def pvc(name: str, namespace: str | None, app: str, wname: str, vol: Mapping[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels(app, wname)}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": [vol.get("access", "ReadWriteOnce")],
            "storageClassName": vol.get("class", "ceph-block"),
            "resources": {"requests": {"storage": str(vol["size"])}},
        },
    }


def run_as(wl: Mapping[str, Any], ctx: Context) -> tuple[int, int] | None:
    value = wl.get("run_as")
    if value is None:
        return None
    if value == "media":
        return ctx.media_uid, ctx.media_gid
    return int(value["user"]), int(value["group"])


def pod_security_context(wl: Mapping[str, Any], ctx: Context, root: bool) -> dict[str, Any]:
    sec: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    ids = run_as(wl, ctx)
    if not root:
        sec["runAsNonRoot"] = True
    if ids:
        sec.update({"runAsUser": ids[0], "runAsGroup": ids[1], "fsGroup": ids[1]})
        sec["fsGroupChangePolicy"] = "OnRootMismatch"
    elif wl.get("fs_group") is not None:
        # A root entrypoint that drops to another user: its volumes must be that group's.
        sec.update({"fsGroup": int(wl["fs_group"]), "fsGroupChangePolicy": "OnRootMismatch"})
    if wl.get("sysctls"):
        sec["sysctls"] = [{"name": k, "value": str(v)} for k, v in wl["sysctls"].items()]
    return sec


def gpu_scheduling(ctx: Context) -> dict[str, Any]:
    """Pods that need the GPU go to the labelled GPU nodes and tolerate their taint."""
    term = {"matchExpressions": [{"key": ctx.gpu_label, "operator": "In", "values": ["true"]}]}
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}},
        "tolerations": [{"key": ctx.gpu_label, "operator": "Equal", "value": "true"}],
    }


def checksum(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def workload_objects(build: AppBuild, app: Mapping[str, Any], wname: str, wl: Mapping[str, Any], ctx: Context) -> None:
    where = f"app {build.name}, workload {wname}"
    ns, name = build.namespace, build.name
    statefulset = wl.get("kind") == "StatefulSet"
    sidecars = wl.get("sidecars") or {}
    root = bool(wl.get("root")) or any(s.get("root") for s in sidecars.values())
    # Config first: its hash goes on the pod template so a change rolls the pods.
    cm_data: dict[str, Any] = {}
    env_names: dict[str, str | None] = {}
    for cname, spec in [(wname, wl), *sidecars.items()]:
        plain, _ = env_list(substitute(spec, ctx, where), where)
        cm = wname if cname == wname else f"{wname}-{cname}"
        env_names[cname] = cm if plain else None
        if plain:
            build.add("configmap.yaml", config_map(cm, ns, name, wname, plain))
            cm_data[cm] = plain
    files, file_mounts = file_data(wl, ctx, where)
    if files:
        build.add("configmap.yaml", config_map(f"{wname}-files", ns, name, wname, files))
        cm_data[f"{wname}-files"] = files
    main = container(wname, substitute(wl, ctx, where), env_cm=env_names[wname], wl=wl, ctx=ctx, where=where, main=True)
    if file_mounts:
        main.setdefault("volumeMounts", []).extend(file_mounts)
    init = []
    for cname, spec in sidecars.items():
        side_where = f"{where}, sidecar {cname}"
        side = container(
            cname, substitute(spec, ctx, where), env_cm=env_names[cname], wl=wl, ctx=ctx, where=side_where, main=False
        )
        # A native sidecar: started (and, with a startup probe, ready) before the app container.
        side["restartPolicy"] = "Always"
        init.append(side)
    pod_labels = labels(name, wname)
    annotations: dict[str, str] = {}
    if cm_data:
        annotations["checksum/config"] = checksum(cm_data)
    if app.get("meshed") and ctx.linkerd:
        annotations["linkerd.io/inject"] = "enabled"
    if root:
        if not wl.get("root_reason"):
            raise TreeError(f"{where} runs a container as root: say why in root_reason")
        pod_labels[ROOT_LABEL] = "allowed"
        annotations[ROOT_REASON] = " ".join(str(wl["root_reason"]).split())
        build.note(
            "statefulset.yaml" if statefulset else "deployment.yaml",
            f"{wname} runs as root: {annotations[ROOT_REASON]}",
        )
    pod: dict[str, Any] = {
        # Service links would put SONARR_PORT=tcp://... style variables into every container.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(wl, ctx, root),
    }
    if init:
        pod["initContainers"] = init
    pod["containers"] = [main]
    volumes = pod_volumes(wname, wl, statefulset, bool(files))
    if volumes:
        pod["volumes"] = volumes
    if wl.get("gpu"):
        pod.update(gpu_scheduling(ctx))
    template: dict[str, Any] = {"metadata": {"labels": pod_labels}, "spec": pod}
    if annotations:
        template["metadata"]["annotations"] = annotations
    spec: dict[str, Any] = {}
    hpa = wl.get("hpa")
    if not hpa:
        spec["replicas"] = int(wl.get("replicas", 1))
    spec["revisionHistoryLimit"] = 3
    spec["selector"] = {"matchLabels": selector(name, wname)}
    claims = pvc_volumes(wl)
    if statefulset:
        spec["serviceName"] = wname
        spec["template"] = template
        if claims:
            spec["volumeClaimTemplates"] = [
                {k: v for k, v in pvc(v_name, None, name, wname, vol).items() if k not in {"apiVersion", "kind"}}
                for v_name, vol in claims.items()
            ]
        kind, file = "StatefulSet", "statefulset.yaml"
    else:
        if claims:
            # ReadWriteOnce volumes: the old pod must let go before the new one mounts them.
            spec["strategy"] = {"type": "Recreate"}
        spec["template"] = template
        kind, file = "Deployment", "deployment.yaml"
        for vname, vol in claims.items():
            build.add("pvc.yaml", pvc(f"{wname}-{vname}", ns, name, wname, vol))
    build.add(file, {"apiVersion": "apps/v1", "kind": kind, "metadata": meta(wname, ns, name, wname), "spec": spec})
    build.add("service.yaml", service(build, wname, wl, ctx))
    build.add("pdb.yaml", pdb(build, wname, wl))
    if hpa:
        build.add("hpa.yaml", autoscaler(build, wname, kind, hpa))
    if present(wl, "metrics") is not None and ctx.monitoring:
        build.add("servicemonitor.yaml", service_monitor(build, wname, wl))
    build.add("networkpolicy.yaml", ingress_policy(build, app, wname, wl, ctx))
    if wl.get("egress_lan"):
        build.add("networkpolicy.yaml", lan_egress_policy(build, wname))


def service(build: AppBuild, wname: str, wl: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    ports = ports_of(wl)
    metadata = meta(wname, build.namespace, build.name, wname)
    spec: dict[str, Any] = {"type": "ClusterIP"}
    if wl.get("load_balancer"):
        spec["type"] = "LoadBalancer"
        # Clients (devices on the LAN) keep their own address; the pods run where they run.
        spec["externalTrafficPolicy"] = "Local"
        address = ctx.lb_addresses.get(wname)
        if address:
            metadata["annotations"] = {"metallb.universe.tf/loadBalancerIPs": str(address)}
    spec["selector"] = selector(build.name, wname)
    spec["ports"] = [
        {"name": n, "port": p["port"], "targetPort": n, "protocol": p["protocol"]} for n, p in ports.items()
    ]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def pdb(build: AppBuild, wname: str, wl: Mapping[str, Any]) -> dict[str, Any]:
    hpa = wl.get("hpa")
    low = int(hpa["min"]) if hpa else int(wl.get("replicas", 1))
    # Several replicas: keep one serving through drains. One replica: allow the eviction
    # (a drain must not hang forever), one pod at a time.
    budget = {"minAvailable": 1} if low >= 2 else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(wname, build.namespace, build.name, wname),
        "spec": {**budget, "selector": {"matchLabels": selector(build.name, wname)}},
    }


def autoscaler(build: AppBuild, wname: str, kind: str, hpa: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(wname, build.namespace, build.name, wname),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": wname},
            "minReplicas": int(hpa["min"]),
            "maxReplicas": int(hpa["max"]),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": int(hpa.get("cpu", 75))},
                    },
                }
            ],
        },
    }


def service_monitor(build: AppBuild, wname: str, wl: Mapping[str, Any]) -> dict[str, Any]:
    metrics = wl.get("metrics") or {}
    ports = metrics.get("ports") or [next(iter(ports_of(wl)))]
    endpoints = []
    for port in ports:
        endpoint: dict[str, Any] = {"port": port, "path": metrics.get("path", "/metrics"), "interval": "60s"}
        if metrics.get("basic_auth"):
            auth = metrics["basic_auth"]
            endpoint["basicAuth"] = {
                "username": {"name": auth["secret"], "key": auth["username"]},
                "password": {"name": auth["secret"], "key": auth["password"]},
            }
        if metrics.get("bearer"):
            bearer = metrics["bearer"]
            endpoint["authorization"] = {
                "type": "Bearer",
                "credentials": {"name": bearer["secret"], "key": bearer["key"]},
            }
        endpoints.append(endpoint)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(wname, build.namespace, build.name, wname),
        "spec": {"selector": {"matchLabels": selector(build.name, wname)}, "endpoints": endpoints},
    }


def from_namespace(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def tcp(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": n} for n in numbers]


def ingress_policy(
    build: AppBuild, app: Mapping[str, Any], wname: str, wl: Mapping[str, Any], ctx: Context
) -> dict[str, Any]:
    """Default-deny ingress for the workload's pods, then exactly who may connect to which port."""
    ports = ports_of(wl)
    meshed = bool(app.get("meshed")) and ctx.linkerd
    extra = [LINKERD_INBOUND] if meshed else []

    def allowed(names: Iterable[str]) -> list[dict[str, Any]]:
        return [{"protocol": ports[n]["protocol"], "port": ports[n]["port"]} for n in names] + tcp(*extra)

    rules: list[dict[str, Any]] = []
    if present(wl, "route"):
        rules.append({"from": [from_namespace(GATEWAY_NAMESPACE)], "ports": allowed([wl["route"]])})
    metrics = wl.get("metrics")
    if metrics is not None and ctx.monitoring:
        names = metrics.get("ports") or [next(iter(ports))]
        rules.append({"from": [from_namespace(MONITORING_NAMESPACE)], "ports": allowed(names)})
    if wl.get("allow_from_namespace"):
        rules.append({"from": [{"podSelector": {}}], "ports": allowed(ports)})
    elif wl.get("allow_from"):
        peers = {
            "matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": list(wl["allow_from"])}]
        }
        rules.append({"from": [{"podSelector": peers}], "ports": allowed(ports)})
    if wl.get("load_balancer"):
        rules.append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": allowed(ports)})
    if meshed:
        rules.append({"from": [from_namespace(LINKERD_VIZ_NAMESPACE)], "ports": tcp(LINKERD_TAP, LINKERD_ADMIN)})
        if ctx.monitoring:
            rules.append({"from": [from_namespace(MONITORING_NAMESPACE)], "ports": tcp(LINKERD_ADMIN)})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(wname, build.namespace, build.name, wname),
        "spec": {
            "podSelector": {"matchLabels": selector(build.name, wname)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def lan_egress_policy(build: AppBuild, wname: str) -> dict[str, Any]:
    """Apps that manage or watch LAN devices (UniFi, Uptime Kuma, Homarr) may reach the private ranges."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(f"{wname}-lan-egress", build.namespace, build.name, wname),
        "spec": {
            "podSelector": {"matchLabels": selector(build.name, wname)},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE_RANGES]}],
        },
    }


def emit(*docs: Mapping[str, Any], header: str = HEADER) -> str:
    """The tree's YAML, from deep copies sharing no objects: no anchors or aliases (&id001)."""
    return dump(*(json.loads(json.dumps(doc)) for doc in docs), header=header)


def app_files(name: str, app: Mapping[str, Any], ctx: Context) -> dict[str, str]:
    build = AppBuild(name=name, namespace=app["namespace"], files={}, headers={})
    secrets = {**platform_secrets(name, app), **(app.get("secrets") or {})}
    for sname, spec in secrets.items():
        build.add("externalsecret.yaml", external_secret(sname, app["namespace"], name, spec, ctx))
    for wname, wl in app["workloads"].items():
        workload_objects(build, app, wname, {k: v for k, v in wl.items() if v is not None}, ctx)
    out: dict[str, str] = {}
    for file, docs in sorted(build.files.items()):
        notes = "".join(f"# {line}\n" for note in build.headers.get(file, []) for line in textwrap.wrap(note, 96))
        out[f"{app['path']}/{file}"] = emit(*docs, header=HEADER + notes)
    out[f"{app['path']}/kustomization.yaml"] = kustomization(sorted(build.files))
    return out


# --------------------------------------------------------------------------------------------
# The shared app layer: cluster/apps/shared/{config,ingress,networkpolicies}.
# --------------------------------------------------------------------------------------------


def shared_namespaces(entries: Mapping[str, Any], entry: str) -> list[str]:
    return sorted(set(entries[entry].get("namespaces") or []))


def shared_config(entries: Mapping[str, Any], apps: Mapping[str, Any], ctx: Context) -> dict[str, str]:
    root = entries[SHARED_CONFIG]["path"]
    files: dict[str, str] = {}
    for ns in shared_namespaces(entries, SHARED_CONFIG):
        doc = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": SHARED_SETTINGS, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "homelab"}},
            "data": {"TZ": ctx.values["timezone"]},
        }
        files[f"{root}/settings-{ns}.yaml"] = emit(doc)
    if any(uses_library(app) for app in apps.values()):
        files[f"{root}/media-library.yaml"] = emit(*media_library(ctx))
    files[f"{root}/kustomization.yaml"] = kustomization(posixpath.basename(p) for p in files)
    return files


def media_library(ctx: Context) -> list[dict[str, Any]]:
    """The NAS media share itself (not a subdirectory per claim): every media app sees one library."""
    if not (ctx.nas_address and ctx.nas_share):
        raise TreeError("media apps need nas_address and nas_exports.media for the shared library volume")
    part_of = {"app.kubernetes.io/part-of": "homelab"}
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"nas-{MEDIA_LIBRARY}", "labels": part_of},
        "spec": {
            "capacity": {"storage": "1Ti"},
            "accessModes": ["ReadWriteMany"],
            # The library outlives the cluster: never delete data on the NAS.
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "nas-media-hot",
            "claimRef": {"namespace": MEDIA_NAMESPACE, "name": MEDIA_LIBRARY},
            "mountOptions": [f"nfsvers={ctx.nfs_version}"],
            "csi": {
                "driver": "nfs.csi.k8s.io",
                "volumeHandle": f"{ctx.nas_address}{ctx.nas_share}#{MEDIA_LIBRARY}",
                "volumeAttributes": {"server": ctx.nas_address, "share": ctx.nas_share},
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": MEDIA_LIBRARY, "namespace": MEDIA_NAMESPACE, "labels": part_of},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "nas-media-hot",
            "volumeName": pv["metadata"]["name"],
            "resources": {"requests": {"storage": "1Ti"}},
        },
    }
    return [pv, claim]


def routes(apps: Mapping[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One HTTPRoute per web UI: <host>.<domain> on the shared Gateway's HTTPS listener."""
    docs = []
    for name, app in sorted(apps.items()):
        for wname, wl in app["workloads"].items():
            if not present(wl, "route"):
                continue
            host = wl.get("host") or wname
            port = ports_of(wl)[wl["route"]]["port"]
            docs.append(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": meta(host, app["namespace"], name, wname),
                    "spec": {
                        "parentRefs": [dict(GATEWAY)],
                        "hostnames": [f"{host}.{ctx.domain}"],
                        "rules": [{"backendRefs": [{"name": wname, "port": port}]}],
                    },
                }
            )
    return docs


def shared_ingress(entries: Mapping[str, Any], apps: Mapping[str, Any], ctx: Context) -> dict[str, str]:
    root = entries[SHARED_INGRESS]["path"]
    files: dict[str, str] = {}
    for doc in routes(apps, ctx):
        rel = f"{doc['metadata']['namespace']}-{doc['metadata']['name']}.yaml"
        if f"{root}/{rel}" in files:
            raise TreeError(f"two web UIs want the hostname {doc['spec']['hostnames'][0]}")
        files[f"{root}/{rel}"] = emit(doc)
    files[f"{root}/kustomization.yaml"] = kustomization(posixpath.basename(p) for p in files)
    return files


def policy(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "homelab"}},
        "spec": {"podSelector": {}, **spec},
    }


def namespace_policies(ns: str, ctx: Context) -> list[dict[str, Any]]:
    """What every pod of an app namespace may do; each app's own policy opens its ingress."""
    egress = {"policyTypes": ["Egress"]}
    docs = [
        # Nothing in, nothing out unless a policy below (or the app's own) allows it.
        policy("default-deny", ns, {"policyTypes": ["Ingress", "Egress"]}),
        policy(
            "allow-dns",
            ns,
            {
                **egress,
                "egress": [
                    {
                        "to": [
                            {
                                **from_namespace("kube-system"),
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
        policy("allow-same-namespace-egress", ns, {**egress, "egress": [{"to": [{"podSelector": {}}]}]}),
        policy(
            "allow-platform-data",
            ns,
            {**egress, "egress": [{"to": [from_namespace(DATABASE_NAMESPACE)], "ports": tcp(5432, 6379)}]},
        ),
        # Apps call each other through their public names, i.e. through the shared Gateway.
        policy("allow-gateway-egress", ns, {**egress, "egress": [{"to": [from_namespace(GATEWAY_NAMESPACE)]}]}),
        policy(
            "allow-internet-egress",
            ns,
            {
                **egress,
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_RANGES, "169.254.0.0/16"]}}]}],
            },
        ),
    ]
    if ctx.linkerd:
        docs.append(
            policy(
                "allow-linkerd-control-plane", ns, {**egress, "egress": [{"to": [from_namespace(LINKERD_NAMESPACE)]}]}
            )
        )
    if ns == MEDIA_NAMESPACE and ctx.nas_address:
        # Pods that talk to the NAS themselves; the library volume is mounted by the node.
        nfs = [{"protocol": proto, "port": port} for port in (111, 2049) for proto in ("TCP", "UDP")]
        docs.append(
            policy(
                "allow-nas-nfs",
                ns,
                {**egress, "egress": [{"to": [{"ipBlock": {"cidr": f"{ctx.nas_address}/32"}}], "ports": nfs}]},
            )
        )
    return docs


def shared_networkpolicies(entries: Mapping[str, Any], ctx: Context) -> dict[str, str]:
    root = entries[SHARED_NETPOL]["path"]
    files = {
        f"{root}/{ns}.yaml": emit(*namespace_policies(ns, ctx)) for ns in shared_namespaces(entries, SHARED_NETPOL)
    }
    files[f"{root}/kustomization.yaml"] = kustomization(posixpath.basename(p) for p in files)
    return files


# --------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------


def generate(
    apps: Mapping[str, Mapping[str, Any]], entries: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, str]:
    """Files of the enabled apps and of the shared app layer, keyed by their path in the tree."""
    ctx = context(settings)
    catalog = resolve_extends(with_overrides(apps, settings.get("gitops_apps_overrides") or {}))
    enabled = {name: app for name, app in catalog.items() if name in entries}
    for name, app in sorted(enabled.items()):
        check_app(name, app, ctx)
    files: dict[str, str] = {}
    for name, app in sorted(enabled.items()):
        files.update(app_files(name, app, ctx))
    if SHARED_CONFIG in entries:
        files.update(shared_config(entries, enabled, ctx))
    if SHARED_INGRESS in entries:
        files.update(shared_ingress(entries, enabled, ctx))
    if SHARED_NETPOL in entries:
        files.update(shared_networkpolicies(entries, ctx))
    return files
