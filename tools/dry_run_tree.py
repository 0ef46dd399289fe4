#!/usr/bin/env python3
# Server-side dry run of a rendered GitOps tree against a real API server (the lab's).
"""Apply every object of a rendered GitOps tree with a server-side dry run.

    tools/dry_run_tree.py <tree-dir> --kubeconfig FILE [--keep] [--json]

What the offline checks (tools/validate_tree.py) cannot see, the API server does: its own
validation of every core object (names, selectors, port names, quantities, immutable fields),
CRD schemas with their CEL rules, admission (PodSecurity warnings, webhooks) and conflicts with
what already runs. The objects are those ArgoCD would apply: each Application's kustomize
paths and the charts that can be rendered offline, in its destination namespace.

Order, as ArgoCD's sync would have it:
  1. the CustomResourceDefinitions of the tree and of the offline-rendered charts are created
     for real (only those the cluster does not serve yet);
  2. CRDs for the remaining custom kinds (charts that cannot be rendered offline) are made from
     the CRD JSON schemas (HOMELAB_CRD_SCHEMAS, ../shared/crd-schemas), so their objects are
     still checked against the same schemas by the API server; they are listed as such;
  3. the tree's Namespaces are created for real (namespaced objects need them);
  4. every other object: server-side apply with dryRun=All and fieldValidation=Strict.
Unless --keep, what steps 1-3 created is deleted again afterwards, so the cluster is as before.

Exit status: 0 every object accepted, 1 some rejected, 2 cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_tree as vt  # the sibling tool: the same rendering

FIELD_MANAGER = "homelab-dry-run"
CRD_API = "apiextensions.k8s.io/v1"
# JSONSchemaProps fields a CRD's openAPIV3Schema accepts; anything else in a JSON schema is dropped.
SCHEMA_KEYS = {
    "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "allOf", "oneOf",
    "anyOf", "not", "properties", "additionalProperties", "nullable", "example",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-validations",
}  # fmt: skip


@dataclass
class Result:
    objects: int = 0
    accepted: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    crds_from_tree: list[str] = field(default_factory=list)
    crds_from_schemas: list[str] = field(default_factory=list)
    crds_present: list[str] = field(default_factory=list)
    namespaces_created: list[str] = field(default_factory=list)
    no_schema: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    left_behind: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The objects: what each Application would apply.
# --------------------------------------------------------------------------------------------


def render(tree: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(Application, its destination namespace, object) for every object of the tree, once."""
    report = vt.Report(tree)
    tools = vt.find_tools()
    kdirs = vt.discover(tree, report)
    vt.build_all(tools["kustomize"], tree, kdirs, report)
    apps, _ = vt.collect_apps(tree, kdirs, report)
    if report.findings:
        raise vt.CannotValidate("the tree does not build: run tools/validate_tree.py on it first")
    args = vt.parse_args([str(tree)])
    opts = vt.options(args)
    opts.crd_schemas = vt.default_crd_schemas().resolve()
    opts.api_versions = vt.provided_api_versions(apps, opts.crd_schemas)
    with tempfile.TemporaryDirectory(prefix="dry-run-tree-") as tmp:
        charts, _ = vt.render_charts(apps, tools, tree, Path(tmp), opts=opts, report=report)
    seen: set[str] = set()
    out = []
    for app in apps.values():
        namespace = str(((app.doc.get("spec") or {}).get("destination") or {}).get("namespace") or "default")
        for doc in [*app.docs, *charts.get(app.name, [])]:
            key = vt.obj_id(doc)
            if key in seen:
                continue
            seen.add(key)
            out.append((app.name, namespace, doc))
    return out


# --------------------------------------------------------------------------------------------
# CRDs made from JSON schemas.
# --------------------------------------------------------------------------------------------


def structural(schema: Any) -> Any:
    """A JSON schema (openapi2jsonschema's, strict) back into a CRD's structural OpenAPI v3 schema."""
    if isinstance(schema, list):
        return [structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out["type"] = types[0] if types else "object"
            if "null" in value:
                out["nullable"] = True
        elif key == "additionalProperties":
            # Strict JSON schemas forbid unknown fields this way; a CRD forbids them by pruning
            # and strict field validation instead, and accepts no `false` here.
            if isinstance(value, dict) and "properties" not in schema:
                out[key] = structural(value)
        elif key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "not") or key in ("allOf", "oneOf", "anyOf"):
            out[key] = structural(value)
        else:
            out[key] = value
    return out


def plural_of(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def crd_from_schema(group: str, version: str, kind: str, schema: Mapping[str, Any], namespaced: bool) -> dict[str, Any]:
    top = structural(schema)
    top["type"] = "object"
    props = top.setdefault("properties", {})
    # The API server owns metadata's schema: a CRD may only say it is an object.
    props["metadata"] = {"type": "object"}
    plural = plural_of(kind)
    annotations = {"homelab.dev/made-from": f"JSON schema {group}/{kind.lower()}_{version}.json"}
    if group.endswith((".k8s.io", ".kubernetes.io")):
        # Groups under k8s.io are protected: the API server wants to see the approval status.
        annotations["api-approved.kubernetes.io"] = "unapproved, made from a JSON schema for a dry run"
    return {
        "apiVersion": CRD_API,
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            "annotations": annotations,
        },
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": top},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# The API.
# --------------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.api = config.new_client_from_config(str(kubeconfig))
        self.refresh()

    def refresh(self) -> None:
        # The dynamic client keeps discovery in a cache file across processes: start from the API.
        self.dyn = DynamicClient(self.api)
        self.dyn.resources.invalidate_cache()

    def resource(self, api_version: str, kind: str) -> Any | None:
        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None

    def apply(self, doc: Mapping[str, Any], namespace: str, *, dry_run: bool) -> tuple[str, list[str]]:
        """Server-side apply; ("", warnings) when accepted, (reason, warnings) when rejected."""
        resource = self.resource(doc["apiVersion"], doc["kind"])
        if resource is None:
            return f"the API server serves no {doc['kind']} in {doc['apiVersion']}", []
        body = copy.deepcopy(dict(doc))
        meta = body.setdefault("metadata", {})
        if resource.namespaced:
            meta.setdefault("namespace", namespace)
        else:
            meta.pop("namespace", None)
        path = resource.path(name=meta["name"], namespace=meta.get("namespace") if resource.namespaced else None)
        query = [("fieldManager", FIELD_MANAGER), ("force", "true"), ("fieldValidation", "Strict")]
        if dry_run:
            query.append(("dryRun", "All"))
        method, url, headers, _, _ = self.api.param_serialize(
            "PATCH",
            path,
            query_params=query,
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # JSON is YAML: the body goes as it is, in the content type server-side apply wants.
        response = self.api.call_api(method, url, header_params=headers, body=json.dumps(body))
        data = response.read()
        warnings = warnings_of(response.headers)
        if response.status >= 300:
            try:
                message = json.loads(data).get("message", data)
            except (TypeError, ValueError):
                message = (data or b"").decode(errors="replace") or str(response.reason)
            return str(message), warnings
        return "", warnings

    def exists(self, api_version: str, kind: str, name: str) -> bool:
        resource = self.resource(api_version, kind)
        try:
            return resource is not None and bool(resource.get(name=name))
        except NotFoundError:
            return False

    def delete(self, api_version: str, kind: str, name: str) -> None:
        resource = self.resource(api_version, kind)
        if resource is not None:
            with contextlib.suppress(NotFoundError):  # already gone is fine
                resource.delete(name=name)

    def wait_established(self, names: Iterable[str], timeout: float = 60) -> list[str]:
        crds = self.resource(CRD_API, "CustomResourceDefinition")
        pending = set(names)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                status = crds.get(name=name).to_dict().get("status") or {}
                if any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or []):
                    pending.discard(name)
            if pending:
                time.sleep(0.5)
        self.refresh()
        return sorted(pending)

    def remove_leftovers(self, timeout: float = 180) -> None:
        """CRDs an earlier, interrupted run made from schemas (labelled): delete them, wait until gone."""
        crds = self.resource(CRD_API, "CustomResourceDefinition")
        selector = f"app.kubernetes.io/managed-by={FIELD_MANAGER}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = crds.get(label_selector=selector).to_dict().get("items") or []
            if not items:
                break
            for item in items:
                if not item["metadata"].get("deletionTimestamp"):
                    self.delete(CRD_API, "CustomResourceDefinition", item["metadata"]["name"])
            time.sleep(1)
        self.refresh()

    def wait_served(self, kinds: Iterable[tuple[str, str]], timeout: float = 60) -> list[str]:
        """Wait until discovery lists each (apiVersion, kind): it lags behind a new CRD's Established."""
        pending = set(kinds)
        deadline = time.monotonic() + timeout
        while pending:
            self.refresh()
            pending = {(v, k) for v, k in pending if self.resource(v, k) is None}
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1)
        return sorted(f"{v} {k}" for v, k in pending)


def warnings_of(headers: Any) -> list[str]:
    if not headers:
        return []
    # urllib3's HTTPHeaderDict keeps repeated headers apart.
    values = headers.getlist("Warning") if hasattr(headers, "getlist") else [headers.get("Warning")]
    out = []
    for value in values or []:
        if value:
            # `299 - "text"`
            text = value.split(" ", 2)[-1].strip().strip('"')
            out.append(text)
    return out


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def custom_kinds(docs: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[tuple[str, str, str], bool]:
    """(group, version, kind) -> namespaced, for every non-core kind used (namespaced: any object has a namespace
    or the kind is not known as cluster-wide)."""
    kinds: dict[tuple[str, str, str], bool] = {}
    for _, _, doc in docs:
        api_version = str(doc.get("apiVersion", ""))
        if "/" not in api_version or doc.get("kind") == "CustomResourceDefinition":
            continue
        group, version = api_version.split("/", 1)
        if "." not in group:
            continue
        key = (group, version, str(doc["kind"]))
        namespaced = bool((doc.get("metadata") or {}).get("namespace"))
        kinds[key] = kinds.get(key, False) or namespaced
    return kinds


def dry_run(tree: Path, kubeconfig: Path, crd_schemas: Path, keep: bool) -> Result:
    result = Result()
    started = time.perf_counter()
    docs = render(tree)
    result.seconds["render"] = round(time.perf_counter() - started, 1)
    cluster = Cluster(kubeconfig)
    cluster.remove_leftovers()
    created: list[tuple[str, str, str]] = []  # (apiVersion, kind, name) to delete afterwards
    try:
        started = time.perf_counter()
        # 1. CRDs of the tree and of the rendered charts.
        new_crds = []
        for app, namespace, doc in docs:
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            if cluster.exists(CRD_API, "CustomResourceDefinition", name):
                result.crds_present.append(name)
                continue
            error, _ = cluster.apply(doc, namespace, dry_run=False)
            if error:
                result.rejected.append({"app": app, "object": vt.obj_id(doc), "error": error})
                continue
            created.append((CRD_API, "CustomResourceDefinition", name))
            result.crds_from_tree.append(name)
            new_crds.append(name)
        cluster.wait_established(new_crds)
        served = {
            (f"{d['spec']['group']}/{v['name']}", d["spec"]["names"]["kind"])
            for _, _, d in docs
            if d.get("kind") == "CustomResourceDefinition" and d["metadata"]["name"] in new_crds
            for v in d["spec"].get("versions") or []
            if v.get("served", True)
        }
        # 2. CRDs from the JSON schemas for what is still not served.
        made = []
        for (group, version, kind), namespaced in sorted(custom_kinds(docs).items()):
            if cluster.resource(f"{group}/{version}", kind) is not None:
                continue
            schema_file = crd_schemas / group / f"{kind.lower()}_{version}.json"
            if not schema_file.is_file():
                result.no_schema.append(f"{group}/{version} {kind}")
                continue
            crd = crd_from_schema(group, version, kind, json.loads(schema_file.read_text()), namespaced)
            error, _ = cluster.apply(crd, "", dry_run=False)
            if error and "x-kubernetes-validations" in json.dumps(crd):
                # CEL rules written for the real CRD can exceed the cost budget without its limits.
                error, _ = cluster.apply(without_key(crd, "x-kubernetes-validations"), "", dry_run=False)
            if error:
                result.rejected.append({"app": "-", "object": f"CRD for {group}/{version} {kind}", "error": error})
                continue
            created.append((CRD_API, "CustomResourceDefinition", crd["metadata"]["name"]))
            result.crds_from_schemas.append(crd["metadata"]["name"])
            made.append(crd["metadata"]["name"])
            served.add((f"{group}/{version}", kind))
        cluster.wait_established(made)
        for missing in cluster.wait_served(served):
            error = "its CRD is established but discovery never listed it"
            result.rejected.append({"app": "-", "object": missing, "error": error})
        # 3. Namespaces.
        for app, namespace, doc in docs:
            if doc.get("kind") != "Namespace" or doc.get("apiVersion") != "v1":
                continue
            name = doc["metadata"]["name"]
            if cluster.exists("v1", "Namespace", name):
                continue
            error, _ = cluster.apply(doc, namespace, dry_run=False)
            if error:
                result.rejected.append({"app": app, "object": vt.obj_id(doc), "error": error})
                continue
            created.append(("v1", "Namespace", name))
            result.namespaces_created.append(name)
        result.seconds["prepare"] = round(time.perf_counter() - started, 1)
        # 4. Everything, dry run.
        started = time.perf_counter()
        for app, namespace, doc in docs:
            result.objects += 1
            result.by_kind[str(doc.get("kind"))] += 1
            error, warnings = cluster.apply(doc, namespace, dry_run=True)
            for warning in warnings:
                result.warnings.append({"app": app, "object": vt.obj_id(doc), "warning": warning})
            if error:
                result.rejected.append({"app": app, "object": vt.obj_id(doc), "error": error})
            else:
                result.accepted += 1
        result.seconds["dry-run"] = round(time.perf_counter() - started, 1)
    finally:
        if not keep:
            for api_version, kind, name in reversed(created):
                cluster.delete(api_version, kind, name)
            # Deletion is asynchronous (finalizers): wait, so that the cluster is as before when
            # this returns and a next run does not find half-deleted CRDs or namespaces.
            deadline = time.monotonic() + 180
            pending = list(created)
            while pending and time.monotonic() < deadline:
                pending = [(v, k, n) for v, k, n in pending if cluster.exists(v, k, n)]
                if pending:
                    time.sleep(1)
            result.left_behind = [f"{k} {n}" for _, k, n in pending]
    return result


def without_key(doc: Any, key: str) -> Any:
    """A copy of doc without `key` at any depth."""
    if isinstance(doc, dict):
        return {k: without_key(v, key) for k, v in doc.items() if k != key}
    if isinstance(doc, list):
        return [without_key(v, key) for v in doc]
    return doc


def summary(result: Result) -> list[str]:
    lines = [
        f"dry_run_tree: {result.objects} objects, {result.accepted} accepted, {len(result.rejected)} rejected"
        f" (render {result.seconds.get('render', 0)} s, CRDs and namespaces {result.seconds.get('prepare', 0)} s,"
        f" dry run {result.seconds.get('dry-run', 0)} s)",
        f"  kinds: {', '.join(f'{k} {n}' for k, n in sorted(result.by_kind.items()))}",
        f"  CRDs from the tree and its charts, created: {len(result.crds_from_tree)};"
        f" already served: {len(result.crds_present)}",
        f"  CRDs made from JSON schemas (charts not rendered offline): {', '.join(result.crds_from_schemas) or 'none'}",
        f"  namespaces created: {len(result.namespaces_created)}",
    ]
    if result.no_schema:
        lines.append(f"  custom kinds with neither a CRD nor a schema: {', '.join(result.no_schema)}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning['object']} ({warning['app']}): {warning['warning']}")
    for rejected in result.rejected:
        lines.append(f"  REJECTED: {rejected['object']} ({rejected['app']}): {rejected['error']}")
    if result.left_behind:
        lines.append(f"  still being deleted after 180 s: {', '.join(result.left_behind)}")
    lines.append("OK: the API server accepts every object" if not result.rejected else "FAILED")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--crd-schemas", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the CRDs and namespaces created for the run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = dry_run(
            args.tree.resolve(), args.kubeconfig, (args.crd_schemas or vt.default_crd_schemas()).resolve(), args.keep
        )
    except vt.CannotValidate as exc:
        print(f"dry_run_tree: cannot run: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {k: v for k, v in vars(result).items()}
        print(json.dumps(doc, indent=2, default=dict))
    else:
        print("\n".join(summary(result)))
    return 1 if result.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
