#!/usr/bin/env python3
# Offline validation of a rendered GitOps tree: builds, strict schemas, Kyverno, secrets, ArgoCD graph, charts.
"""Validate a rendered GitOps tree without a cluster or the internet.

    tools/validate_tree.py <tree-dir> [--json]

Checks, each reported with the file, object and reason of every failure:
  kustomize  every directory with a kustomization builds (Components through their includers)
  schemas    every built object validates strictly (kubeconform -strict): Kubernetes schemas
             from the kubernetes-validate package, custom resources from the CRD schemas
             (HOMELAB_CRD_SCHEMAS, default ../shared/crd-schemas beside the repository)
  kyverno    the tree's own Kyverno policies pass on every rendered object (PolicyExceptions
             and the policies' exclude blocks apply)
  secrets    no Secret with data in the tree; no private key, token or password in any file
  graph      ArgoCD: sources, values files, one Application per directory, AppProject
             destinations and repositories, CRD providers synced no later than their users
  charts     the Helm charts whose source the Go module proxy carries are rendered with the
             tree's values and validated like the rest

Needs kustomize, kubeconform, kyverno and helm (`make validate-tools` builds them into
$HOMELAB_CACHE/tools/bin). Exit status: 0 valid, 1 invalid, 2 cannot validate.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fnmatch
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULTS_DIR = REPO / "roles/cluster_defaults/defaults/main"
ROOT_APP_DIR = "cluster/bootstrap/root-application"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
TOOLS = ("kustomize", "kubeconform", "kyverno", "helm")
CHECKS = ("schemas", "kyverno", "secrets", "graph", "charts")
CPUS = os.cpu_count() or 2

# Kinds that may go unvalidated for want of a schema, each with the reason (printed on every run).
# A kind without a schema that is not listed here fails the run.
SCHEMA_ALLOWLIST: dict[str, str] = {}

# Secrets with data that may live in the tree (namespace/name -> why it is not sensitive).
SECRET_ALLOWLIST: dict[str, str] = {}

# Which Applications (the catalog's names, roles/gitops/vars/main/components.yml) install the
# CRDs of each API group. An object of a group must sit in an Application whose sync wave is
# not lower than its provider's, or ArgoCD applies it before its CRD exists.
CRD_PROVIDERS: dict[str, tuple[str, ...]] = {
    "monitoring.coreos.com": ("prometheus-operator-crds", "kube-prometheus-stack"),
    "gateway.networking.k8s.io": ("gateway-api",),
    "gateway.networking.x-k8s.io": ("gateway-api",),
    "linkerd.io": ("linkerd-crds",),
    "policy.linkerd.io": ("linkerd-crds",),
    "workload.linkerd.io": ("linkerd-crds",),
    "cert-manager.io": ("cert-manager",),
    "acme.cert-manager.io": ("cert-manager",),
    "external-secrets.io": ("external-secrets",),
    "generators.external-secrets.io": ("external-secrets",),
    "kyverno.io": ("kyverno",),
    "policies.kyverno.io": ("kyverno",),
    "reports.kyverno.io": ("kyverno",),
    "wgpolicyk8s.io": ("kyverno",),
    "metallb.io": ("metallb",),
    "ceph.rook.io": ("rook-ceph",),
    "objectbucket.io": ("rook-ceph",),
    "postgresql.cnpg.io": ("cloudnative-pg",),
    "barmancloud.cnpg.io": ("barman-cloud-plugin",),
    "redis.redis.opstreelabs.in": ("redis-operator",),
    "velero.io": ("velero",),
    "externaldns.k8s.io": ("external-dns",),
    "ingress.v1.haproxy.org": ("haproxy-gateway",),
    "ingress.v3.haproxy.org": ("haproxy-gateway",),
    "gate.v3.haproxy.org": ("haproxy-gateway",),
    # csi-driver-nfs's chart installs the external snapshotter (CRDs and controller), which
    # Kubernetes does not ship; rook-ceph's VolumeSnapshotClass needs it.
    "snapshot.storage.k8s.io": ("nas-storage",),
}
# Groups whose CRDs exist before the root Application first syncs (installed by the playbooks).
BOOTSTRAP_GROUPS: dict[str, str] = {
    "argoproj.io": "ArgoCD's install manifest, applied by the argocd phase before the root Application",
    "cilium.io": "Cilium, installed by the cni phase before ArgoCD (cilium-operator registers its CRDs)",
}

# PEM blocks that are public by nature (certificates, public keys for signature checks).
PUBLIC_PEM = re.compile(r"-----BEGIN (?:CERTIFICATE|X509 CRL|(?:[A-Z0-9]+ )*PUBLIC KEY(?: BLOCK)?)-----")
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PEM block (private key?)", re.compile(r"-----BEGIN [A-Z0-9 ]+-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")),
    ("bearer token", re.compile(r"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/-]{20,}=*")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("credentials in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$]+@")),
)
SECRET_KEY = re.compile(
    r"""(?i)(?<![\w./-])["']?([A-Za-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"""
    r"""[A-Za-z0-9_.-]*)["']?[ \t]*[:=][ \t]*["']?([^\s"'#,{}\[\]]*)"""
)
KUBE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
REFERENCE_PREFIXES = ("$", "{{", "%", "<", "/", "*", "&", "!", "|", ">")
MAX_SCAN_BYTES = 64_000_000  # vendored manifests run to megabytes; anything larger is not config


class CannotValidate(Exception):
    """A tool, schema set or input is missing: the message says what to run or set."""


@dataclass(frozen=True)
class Finding:
    check: str
    where: str
    message: str


@dataclass
class Report:
    tree: Path
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The checks asked for (--only); empty for all. kustomize always runs: the rest need its output.
    only: frozenset[str] = frozenset()

    def wants(self, check: str) -> bool:
        return not self.only or check == "kustomize" or {"waves": "graph"}.get(check, check) in self.only

    def fail(self, check: str, where: str, message: str) -> None:
        if self.wants(check):
            self.findings.append(Finding(check, where, message))

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.perf_counter() - start, 2)


@dataclass
class KDir:
    """One directory holding a kustomization."""

    rel: str
    component: bool
    includes: list[str]  # local directories in resources/components, relative to the tree
    remote: list[str]  # resources kustomize would fetch over the network
    docs: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    built: bool = False


@dataclass
class Rendered:
    """Objects from one source (a kustomize root or a chart), written to one file for the tools."""

    label: str
    docs: list[dict[str, Any]]
    app: str = ""
    text: str = ""  # the tool's own output, written as it is when there is one


@dataclass
class ChartResult:
    key: str
    chart: str
    version: str
    apps: list[str] = field(default_factory=list)
    rendered: bool = False
    objects: int = 0
    schema: bool = False
    reason: str = ""


# --------------------------------------------------------------------------------------------
# Small helpers.
# --------------------------------------------------------------------------------------------


def dump_yaml_docs(docs: Iterable[Mapping[str, Any]]) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(docs, Dumper=dumper, sort_keys=False)


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if isinstance(d, dict)]


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def obj_id(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {ns}{meta.get('name')}"


def run(cmd: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def cache_root() -> Path:
    value = os.environ.get("HOMELAB_CACHE", "")
    return Path(value) if value else Path.home() / ".cache" / "homelab-bootstrap"


def find_tools() -> dict[str, str]:
    """The tools on PATH or in $HOMELAB_CACHE/tools/bin (where `make validate-tools` puts them)."""
    search = os.pathsep.join([str(cache_root() / "tools" / "bin"), os.environ.get("PATH", "")])
    found = {name: shutil.which(name, path=search) for name in TOOLS}
    missing = sorted(name for name, path in found.items() if not path)
    if missing:
        raise CannotValidate(f"{', '.join(missing)} not found: run `make validate-tools`")
    return {name: str(path) for name, path in found.items()}


def read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CannotValidate(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------------
# (a) kustomize: discover and build every kustomization.
# --------------------------------------------------------------------------------------------


def tree_files(tree: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            yield Path(dirpath) / name


def is_remote(entry: str) -> bool:
    return "://" in entry or entry.startswith(("github.com/", "git@", "ssh:"))


def discover(tree: Path, report: Report) -> dict[str, KDir]:
    """Every kustomization directory, with the local directories it includes."""
    kdirs: dict[str, KDir] = {}
    for path in tree_files(tree):
        if path.name not in KUSTOMIZATION_FILES:
            continue
        rel = path.parent.relative_to(tree).as_posix()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            report.fail("kustomize", path.relative_to(tree).as_posix(), f"not valid YAML: {exc}")
            continue
        includes: list[str] = []
        remote: list[str] = []
        entries = [*(data.get("resources") or []), *(data.get("components") or []), *(data.get("bases") or [])]
        for entry in map(str, entries):
            if is_remote(entry):
                remote.append(entry)
                continue
            target = (path.parent / entry).resolve()
            if target.is_dir():
                try:
                    includes.append(target.relative_to(tree.resolve()).as_posix())
                except ValueError:
                    report.fail("kustomize", rel, f"includes {entry}, outside the tree")
        kdirs[rel] = KDir(rel, data.get("kind") == "Component", includes, remote)
    return kdirs


def build_one(kustomize: str, tree: Path, kdir: KDir) -> tuple[KDir, str]:
    code, out, err = run([kustomize, "build", kdir.rel], cwd=tree)
    if code != 0:
        return kdir, tail(err or out)
    try:
        kdir.docs = load_yaml_docs(out)
    except yaml.YAMLError as exc:
        return kdir, f"output is not YAML: {exc}"
    kdir.text, kdir.built = out, True
    return kdir, ""


def build_all(kustomize: str, tree: Path, kdirs: Mapping[str, KDir], report: Report) -> None:
    todo = []
    for kdir in kdirs.values():
        if kdir.component:
            continue
        if kdir.remote:
            report.fail(
                "kustomize", kdir.rel, f"remote resources cannot be validated offline: {', '.join(kdir.remote)}"
            )
            continue
        todo.append(kdir)
    with concurrent.futures.ThreadPoolExecutor(max_workers=CPUS) as pool:
        for kdir, error in pool.map(lambda k: build_one(kustomize, tree, k), todo):
            if error:
                report.fail("kustomize", kdir.rel, f"kustomize build failed: {error}")
    components = sum(1 for k in kdirs.values() if k.component)
    report.stats["kustomize"] = {"directories": len(kdirs), "built": len(todo), "components": components}


def roots(kdirs: Mapping[str, KDir]) -> list[KDir]:
    """Built directories no other kustomization includes: together they hold every object once."""
    included = {inc for k in kdirs.values() for inc in k.includes}
    return [k for rel, k in sorted(kdirs.items()) if k.built and rel not in included]


# --------------------------------------------------------------------------------------------
# Schemas: Kubernetes (kubernetes-validate package) and CRDs (shared/crd-schemas), made local.
# --------------------------------------------------------------------------------------------


def kubernetes_minor(versions_file: Path) -> tuple[int, int]:
    version = str(read_yaml_file(versions_file).get("kubernetes_version", ""))
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if not match:
        raise CannotValidate(f"no kubernetes_version in {versions_file}")
    return int(match.group(1)), int(match.group(2))


def kubernetes_validate_dir() -> tuple[Path, str]:
    try:
        import kubernetes_validate  # noqa: PLC0415 - optional until this check runs
        from kubernetes_validate import version as kv_version  # noqa: PLC0415
    except ImportError as exc:
        raise CannotValidate("the kubernetes-validate package is missing: run `make venv`") from exc
    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema", str(kv_version.__version__)


def pick_schema_release(available: Iterable[str], wanted: tuple[int, int]) -> tuple[str, bool]:
    """The strict schema directory for the wanted minor, else the newest older one (False)."""
    found: dict[tuple[int, int], str] = {}
    for name in available:
        match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", name)
        if match:
            found[int(match.group(1)), int(match.group(2))] = name
    if wanted in found:
        return found[wanted], True
    older = [v for v in found if v <= wanted] or list(found)
    if not older:
        raise CannotValidate("kubernetes-validate ships no strict schemas")
    return found[max(older)], False


REF = re.compile(r'"\$ref":\s*"(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')


def referenced(text: str, definitions: Mapping[str, Any], cache: dict[str, str]) -> dict[str, Any]:
    """The definitions a schema needs, transitively."""
    needed: dict[str, Any] = {}
    todo = REF.findall(text)
    while todo:
        name = todo.pop()
        if name in needed or name not in definitions:
            continue
        needed[name] = definitions[name]
        if name not in cache:
            cache[name] = json.dumps(definitions[name])
        todo += REF.findall(cache[name])
    return needed


def localize_core_schemas(src: Path, dest: Path) -> None:
    """kubernetes-validate's schemas refer to https://kubernetes.io/api/_definitions.json. Give each
    kind's schema the definitions it uses instead, so kubeconform never goes to the network and
    compiles a small document per kind rather than the 1.8 MB definitions file each time."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    definitions = json.loads((src / "_definitions.json").read_text(encoding="utf-8"))["$defs"]
    cache: dict[str, str] = {}
    for path in src.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if path.name == "_definitions.json" or not data.get("x-kubernetes-group-version-kind"):
            continue  # only top-level kinds are looked up by kubeconform
        data.pop("$id", None)
        text = json.dumps(data, separators=(",", ":"))
        data["$defs"] = referenced(text, definitions, cache)
        text = json.dumps(data, separators=(",", ":")).replace('"/api/_definitions.json#', '"#')
        (tmp / path.name).write_text(text, encoding="utf-8")
    groups = {gvk["group"] for d in definitions.values() for gvk in d.get("x-kubernetes-group-version-kind") or []}
    (tmp / "_groups.json").write_text(json.dumps(sorted(groups)), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def strict_crd_schemas(src: Path, dest: Path) -> None:
    """The CRD schemas with unknown top-level fields refused, as the API server's strict field
    validation does (the catalog's schemas are strict below the top level only)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    for path in src.rglob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue  # an empty placeholder (argoproj.io/workflow): the kind then has no schema
        if isinstance(data, dict) and "properties" in data:
            data.setdefault("additionalProperties", False)
        out = tmp / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def dir_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.json")):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Schemas:
    core: Path
    crds: Path
    core_label: str
    builtin_groups: frozenset[str]


def prepare_schemas(crd_dir: Path, versions_file: Path, report: Report) -> Schemas:
    if not crd_dir.is_dir():
        raise CannotValidate(f"CRD schemas not found at {crd_dir}: set HOMELAB_CRD_SCHEMAS or --crd-schemas")
    base, kv_version = kubernetes_validate_dir()
    wanted = kubernetes_minor(versions_file)
    release, exact = pick_schema_release((p.name for p in base.iterdir()), wanted)
    if not exact:
        report.notes.append(
            f"kubernetes-validate {kv_version} has no schemas for Kubernetes {wanted[0]}.{wanted[1]}: using {release}"
        )
    root = cache_root() / "schemas"
    root.mkdir(parents=True, exist_ok=True)
    core = root / f"kubernetes-validate-{kv_version}" / release
    if not (core / "_groups.json").is_file():
        core.parent.mkdir(parents=True, exist_ok=True)
        localize_core_schemas(base / release, core)
    crds = root / f"crds-strict-{dir_digest(crd_dir)}"
    if not crds.is_dir():
        strict_crd_schemas(crd_dir, crds)
    groups = frozenset(json.loads((core / "_groups.json").read_text(encoding="utf-8")))
    return Schemas(core, crds, f"kubernetes-validate {kv_version} {release}", groups)


# --------------------------------------------------------------------------------------------
# (b) strict schema validation, one kubeconform run over everything.
# --------------------------------------------------------------------------------------------


def write_sources(sources: Sequence[Rendered], workdir: Path) -> dict[str, Rendered]:
    files: dict[str, Rendered] = {}
    for i, src in enumerate(sources):
        path = workdir / f"{i:04d}.yaml"
        path.write_text(src.text or dump_yaml_docs(src.docs), encoding="utf-8")
        files[str(path)] = src
    return files


def kubeconform_cmd(kubeconform: str, schemas: Schemas, files: Iterable[str]) -> list[str]:
    return [
        kubeconform,
        "-strict",
        "-output",
        "json",
        "-verbose",
        "-n",
        str(CPUS * 2),
        "-schema-location",
        f"{schemas.core}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        "-schema-location",
        f"{schemas.crds}/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
        *files,
    ]


def schema_source(schemas: Schemas, api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    if group in schemas.builtin_groups or not group:
        return "core"
    return f"{group}/{kind.lower()}_{version}.json"


def schema_error(res: Mapping[str, Any]) -> str:
    """`/spec: additional properties 'replica' not allowed` out of kubeconform's result."""
    errors = [e for e in res.get("validationErrors") or [] if e.get("msg") not in (None, "", "validation failed")]
    if errors:
        return "; ".join(f"{e.get('path') or '/'}: {e.get('msg')}" for e in errors)
    msg = re.sub(r"^.*?validation failed with '[^']*'\s*", "", str(res.get("msg", "")), flags=re.DOTALL)
    parts = [m.groups() for m in re.finditer(r"at '([^']*)': ([^\n]+)", msg)]
    return "; ".join(f"{path or '/'}: {text.strip()}" for path, text in parts) or msg.strip()


def check_schemas(
    result: tuple[int, str, str],
    files: Mapping[str, Rendered],
    schemas: Schemas,
    origin: Mapping[str, str],
    report: Report,
) -> None:
    """Count what validated, fail on what did not; `origin` names the tree file of an object."""
    code, out, err = result
    try:
        data = json.loads(out)
    except ValueError:
        report.fail("schemas", "kubeconform", f"no JSON output (exit {code}): {tail(err or out)}")
        return
    valid: Counter[str] = Counter()
    crd_files: Counter[str] = Counter()
    skipped: dict[str, str] = {}
    for res in data.get("resources") or []:
        src = files.get(res.get("filename", ""))
        ident = f"{res.get('kind')} {res.get('name')}"
        where = f"{src.label if src else res.get('filename')}: {ident}"
        if src and not src.app and ident in origin:
            where += f" ({origin[ident]})"
        status, msg = res.get("status"), str(res.get("msg", ""))
        kind_key = f"{group_of(str(res.get('version', '')))}/{res.get('kind')}"
        if status == "statusValid":
            valid[str(res.get("kind"))] += 1
            source = schema_source(schemas, str(res.get("version", "")), str(res.get("kind")))
            if source != "core":
                crd_files[source] += 1
        elif status == "statusError" and "could not find schema" in msg:
            if kind_key in SCHEMA_ALLOWLIST:
                skipped[kind_key] = SCHEMA_ALLOWLIST[kind_key]
            else:
                report.fail(
                    "schemas",
                    where,
                    f"no schema for {res.get('version')} {res.get('kind')} (add it to the CRD schemas)",
                )
        elif status in ("statusInvalid", "statusError"):
            report.fail("schemas", where, schema_error(res))
    report.stats["schemas"] = {
        "valid": sum(valid.values()),
        "by_kind": dict(sorted(valid.items())),
        "core": schemas.core_label,
        "crd_schemas": dict(sorted(crd_files.items())),
        "skipped": skipped,
    }


# --------------------------------------------------------------------------------------------
# (c) Kyverno: the tree's policies on every rendered object.
# --------------------------------------------------------------------------------------------

POLICY_KINDS = {
    "kyverno.io": {"ClusterPolicy", "Policy"},
    "policies.kyverno.io": {
        "ValidatingPolicy",
        "NamespacedValidatingPolicy",
        "ImageValidatingPolicy",
        "NamespacedImageValidatingPolicy",
        "MutatingPolicy",
        "NamespacedMutatingPolicy",
        "GeneratingPolicy",
        "NamespacedGeneratingPolicy",
        "DeletingPolicy",
        "NamespacedDeletingPolicy",
    },
}
EXCEPTION_KINDS = {"kyverno.io": {"PolicyException"}, "policies.kyverno.io": {"PolicyException"}}


def is_kind(doc: Mapping[str, Any], table: Mapping[str, set[str]]) -> bool:
    return doc.get("kind") in table.get(group_of(str(doc.get("apiVersion", ""))), set())


def kyverno_inputs(sources: Sequence[Rendered], workdir: Path) -> tuple[list[str], dict[str, int]] | None:
    """Write policies, exceptions, resources and namespace labels; the kyverno command's arguments."""
    policies, exceptions, resources, namespaces = [], [], [], []
    for src in sources:
        for doc in src.docs:
            if is_kind(doc, POLICY_KINDS):
                policies.append(doc)
            elif is_kind(doc, EXCEPTION_KINDS):
                exceptions.append(doc)
            elif doc.get("kind") != "CustomResourceDefinition":  # schemas, not workloads: megabytes of them
                resources.append(doc)
                if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1":
                    meta = doc.get("metadata") or {}
                    namespaces.append({"name": meta.get("name"), "labels": meta.get("labels") or {}})
    counts = {"policies": len(policies), "exceptions": len(exceptions), "resources": len(resources)}
    if not policies:
        return None
    (workdir / "policies.yaml").write_text(dump_yaml_docs(policies), encoding="utf-8")
    (workdir / "resources.yaml").write_text(dump_yaml_docs(resources), encoding="utf-8")
    # Policies matching on namespaceSelector see the tree's Namespace labels.
    values = {
        "apiVersion": "cli.kyverno.io/v1alpha1",
        "kind": "Value",
        "metadata": {"name": "tree-namespaces"},
        "namespaceSelector": namespaces,
    }
    (workdir / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    args = [
        str(workdir / "policies.yaml"),
        "--resource",
        str(workdir / "resources.yaml"),
        "--values-file",
        str(workdir / "values.yaml"),
    ]
    if exceptions:
        (workdir / "exceptions.yaml").write_text(dump_yaml_docs(exceptions), encoding="utf-8")
        args += ["--exception", str(workdir / "exceptions.yaml")]
    return args, counts


def kyverno_cmd(kyverno: str, args: Sequence[str]) -> list[str]:
    # --audit-warn tells Audit policies' violations (warn) from Enforce ones (fail); both count.
    return [kyverno, "apply", *args, "--audit-warn", "--policy-report", "--output-format", "json", "--remove-color"]


def check_kyverno(
    result: tuple[int, str, str] | None, counts: Mapping[str, int], origin: Mapping[str, str], report: Report
) -> None:
    report.stats["kyverno"] = dict(counts)
    if result is None:
        report.fail("kyverno", "tree", "the tree has no Kyverno policies (ClusterPolicy, Policy, ValidatingPolicy...)")
        return
    code, out, err = result
    start = out.find("{")
    try:
        data = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        report.fail("kyverno", "kyverno apply", f"no policy report (exit {code}): {tail(err or out)}")
        return
    summary = data.get("summary") or {}
    report.stats["kyverno"].update({k: summary.get(k, 0) for k in ("pass", "fail", "warn", "error", "skip")})
    results = sorted(data.get("results") or [], key=lambda r: json.dumps(r.get("resources"), sort_keys=True))
    for res in results:
        if res.get("result") not in ("fail", "warn", "error"):
            continue
        mode = {"fail": "Enforce", "warn": "Audit", "error": "error"}[res["result"]]
        for target in res.get("resources") or [{}]:
            ident = obj_id({"kind": target.get("kind"), "metadata": target})
            where = f"{origin.get(ident, '?')}: {ident}"
            report.fail("kyverno", where, f"{res.get('policy')}/{res.get('rule')} ({mode}): {res.get('message')}")


# --------------------------------------------------------------------------------------------
# (d) secrets: Secret objects with data, and credentials in any file.
# --------------------------------------------------------------------------------------------


def shannon(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def classes(value: str) -> int:
    return sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )


def suspicious_value(key: str, value: str) -> str:
    """Why a literal assigned to a secret-looking key looks like a credential ('' when it does not)."""
    value = value.strip()
    empty = not value or value.lower() in ("null", "~", "true", "false", "none", "yes", "no") or value.isdigit()
    if empty or value.startswith(REFERENCE_PREFIXES):
        return ""
    if key.lower().endswith(("password", "passwd")):
        return "literal password"
    if re.fullmatch(r"[0-9a-f]{32,}", value):
        return "hex token"
    # Names of Secrets, keys and environment variables are what such keys normally hold.
    named = bool(KUBE_NAME.match(value) or re.fullmatch(r"[A-Z][A-Z0-9_]*", value))
    entropy = shannon(value)
    random = (len(value) >= 20 and entropy >= 4.0) or (len(value) >= 16 and classes(value) >= 3 and entropy >= 3.5)
    return "high-entropy value" if random and not named else ""


def scan_text(rel: str, text: str) -> Iterator[tuple[str, int, str]]:
    """Credentials in a file: (file, line, what). Whole-text searches: most files have none."""
    hits: list[tuple[int, str]] = []
    for label, pattern in SECRET_PATTERNS:
        for match in pattern.finditer(text):
            line = line_at(text, match.start())
            if not (label.startswith("PEM") and PUBLIC_PEM.search(line)):
                hits.append((match.start(), f"{label}: {match.group(0)[:24]}..."))
    for match in SECRET_KEY.finditer(text):
        why = suspicious_value(match.group(1), match.group(2))
        if why:
            hits.append((match.start(), f"{why} assigned to {match.group(1)}"))
    for pos, message in sorted(hits):
        if not line_at(text, pos).lstrip().startswith("#"):
            yield rel, text.count("\n", 0, pos) + 1, message


def line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)]


def secret_objects(docs: Iterable[Mapping[str, Any]], where: str) -> Iterator[tuple[str, str]]:
    for doc in docs:
        if doc.get("kind") != "Secret" or doc.get("apiVersion") != "v1":
            continue
        if not (doc.get("data") or doc.get("stringData")):
            continue
        meta = doc.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name')}"
        if key not in SECRET_ALLOWLIST:
            yield where, f"Secret {key} carries data/stringData: use an ExternalSecret"


def check_secrets(tree: Path, kdirs: Mapping[str, KDir], report: Report) -> dict[str, str]:
    """Scan every file; returns `Kind ns/name` -> file for the tree's YAML objects (for messages)."""
    origin: dict[str, str] = {}
    scanned = 0
    for path in tree_files(tree):
        rel = path.relative_to(tree).as_posix()
        try:
            if path.stat().st_size > MAX_SCAN_BYTES:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        scanned += 1
        for file, line, message in scan_text(rel, text):
            report.fail("secrets", f"{file}:{line}", message)
        if path.suffix in (".yaml", ".yml"):
            try:
                docs = load_yaml_docs(text)
            except yaml.YAMLError:
                continue  # kustomize reports YAML that matters
            for doc in docs:
                origin.setdefault(obj_id(doc), rel)
                origin.setdefault(f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}", rel)
            for where, message in secret_objects(docs, rel):
                report.fail("secrets", where, message)
    for kdir in kdirs.values():
        for where, message in secret_objects(kdir.docs, f"kustomize build {kdir.rel}"):
            if not any(f.message == message for f in report.findings):
                report.fail("secrets", where, message)
    report.stats["secrets"] = {"files": scanned}
    return origin


def origin_of(origin: Mapping[str, str], doc: Mapping[str, Any]) -> str:
    """The tree file an object most likely comes from (raw files often leave the namespace out)."""
    meta = doc.get("metadata") or {}
    return origin.get(obj_id(doc)) or origin.get(f"{doc.get('kind')} {meta.get('name')}") or "?"


# --------------------------------------------------------------------------------------------
# (e) the ArgoCD graph: sources, reachability, projects, values files.
# --------------------------------------------------------------------------------------------


@dataclass
class App:
    name: str
    doc: dict[str, Any]
    wave: int
    dirs: list[str] = field(default_factory=list)  # kustomization dirs it syncs (its Git paths)
    docs: list[dict[str, Any]] = field(default_factory=list)  # its rendered objects
    charts: list[dict[str, Any]] = field(default_factory=list)  # its chart sources

    @property
    def sources(self) -> list[dict[str, Any]]:
        spec = self.doc.get("spec") or {}
        return list(spec.get("sources") or ([spec["source"]] if spec.get("source") else []))


def app_wave(doc: Mapping[str, Any]) -> int:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    try:
        return int(str(annotations.get("argocd.argoproj.io/sync-wave", "0")))
    except ValueError:
        return 0


def applications(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        dict(d) for d in docs if d.get("kind") == "Application" and group_of(d.get("apiVersion", "")) == "argoproj.io"
    ]


def root_apps(tree: Path, kdirs: Mapping[str, KDir], report: Report) -> tuple[list[dict[str, Any]], str]:
    """The root Application(s) the argocd phase applies, and the tree's own repository URL."""
    kdir = kdirs.get(ROOT_APP_DIR)
    if kdir is not None:
        docs = kdir.docs
    else:
        docs = []
        for path in sorted((tree / ROOT_APP_DIR).glob("*.y*ml")):
            docs += load_yaml_docs(path.read_text(encoding="utf-8"))
    apps = applications(docs)
    if not apps:
        report.fail("graph", ROOT_APP_DIR, "no root Application found")
        return [], ""
    for source in App("root", apps[0], 0).sources:
        if source.get("path") is not None and source.get("repoURL"):
            return apps, str(source["repoURL"])
    report.fail("graph", ROOT_APP_DIR, "the root Application has no Git source with a path")
    return apps, ""


def reach(rel: str, app: str, kdirs: Mapping[str, KDir], reached: dict[str, set[str]], seen: set[str]) -> None:
    if rel in seen:
        return
    seen.add(rel)
    reached[rel].add(app)
    for inc in kdirs[rel].includes if rel in kdirs else []:
        reach(inc, app, kdirs, reached, seen)


def walk_sources(app: App, repo: str, tree: Path, kdirs: Mapping[str, KDir], report: Report) -> None:
    where = f"Application {app.name}"
    refs = {str(s["ref"]): s for s in app.sources if s.get("ref")}
    for source in app.sources:
        if source.get("chart"):
            app.charts.append(source)
            for value_file in (source.get("helm") or {}).get("valueFiles") or []:
                check_value_file(str(value_file), refs, repo, tree, where=where, report=report)
            continue
        if source.get("repoURL") != repo:
            report.fail("graph", where, f"Git source {source.get('repoURL')} is not the tree's repository {repo}")
            continue
        if source.get("path") is None:
            if not source.get("ref"):
                report.fail("graph", where, "Git source without a path")
            continue
        rel = os.path.normpath(str(source["path"])).strip("/")
        if not (tree / rel).is_dir():
            report.fail("graph", where, f"source path {rel} does not exist in the tree")
        elif rel not in kdirs:
            report.fail("graph", where, f"source path {rel} has no kustomization.yaml")
        else:
            app.dirs.append(rel)
            app.docs += kdirs[rel].docs


def check_value_file(
    value_file: str, refs: Mapping[str, Mapping[str, Any]], repo: str, tree: Path, *, where: str, report: Report
) -> None:
    if not value_file.startswith("$"):
        return  # relative to the chart itself
    ref, _, rel = value_file[1:].partition("/")
    source = refs.get(ref)
    if source is None:
        report.fail("graph", where, f"valueFiles {value_file}: no source has ref: {ref}")
    elif source.get("repoURL") != repo:
        report.fail("graph", where, f"valueFiles {value_file}: ref {ref} is not the tree's repository")
    elif not (tree / rel).is_file():
        report.fail("graph", where, f"valueFiles {value_file}: {rel} does not exist in the tree")


def collect_apps(tree: Path, kdirs: Mapping[str, KDir], report: Report) -> tuple[dict[str, App], str]:
    """Every Application reachable from the root, breadth first, each with its rendered objects."""
    roots_found, repo = root_apps(tree, kdirs, report)
    apps: dict[str, App] = {}
    queue = list(roots_found)
    while queue:
        doc = queue.pop(0)
        name = str((doc.get("metadata") or {}).get("name"))
        if name in apps:
            if apps[name].doc != doc:
                report.fail("graph", f"Application {name}", "defined twice with different content")
            continue
        app = App(name, doc, app_wave(doc))
        apps[name] = app
        walk_sources(app, repo, tree, kdirs, report)
        queue += applications(app.docs)
    return apps, repo


def check_reachability(apps: Mapping[str, App], kdirs: Mapping[str, KDir], report: Report) -> None:
    reached: dict[str, set[str]] = defaultdict(set)
    for app in apps.values():
        seen: set[str] = set()
        for rel in app.dirs:
            reach(rel, app.name, kdirs, reached, seen)
    for rel, kdir in sorted(kdirs.items()):
        owners = sorted(reached.get(rel, ()))
        if kdir.component:
            if not owners:
                report.fail("graph", rel, "kustomize Component that no kustomization includes")
        elif not owners:
            report.fail("graph", rel, "no Application reaches this directory (dead files)")
        elif len(owners) > 1:
            report.fail("graph", rel, f"reached by {len(owners)} Applications ({', '.join(owners)}): each object once")


def glob_allows(patterns: Iterable[str], value: str) -> bool:
    """ArgoCD's project globs: a match allows unless a `!pattern` also matches."""
    allowed = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(value, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(value, pattern):
            allowed = True
    return allowed


def destination_allowed(project: Mapping[str, Any], server: str, name: str, namespace: str) -> bool:
    for dest in (project.get("spec") or {}).get("destinations") or []:
        target_ok = (server and glob_allows([str(dest.get("server", ""))], server)) or (
            name and glob_allows([str(dest.get("name", ""))], name)
        )
        if target_ok and glob_allows([str(dest.get("namespace", ""))], namespace):
            return True
    return False


def check_projects(apps: Mapping[str, App], report: Report) -> None:
    projects = {
        str((d.get("metadata") or {}).get("name")): d
        for app in apps.values()
        for d in app.docs
        if d.get("kind") == "AppProject" and group_of(str(d.get("apiVersion", ""))) == "argoproj.io"
    }
    for app in apps.values():
        spec = app.doc.get("spec") or {}
        where = f"Application {app.name}"
        project = projects.get(str(spec.get("project")))
        if project is None:
            report.fail("graph", where, f"AppProject {spec.get('project')} is not in the tree")
            continue
        dest = spec.get("destination") or {}
        server, name, namespace = str(dest.get("server", "")), str(dest.get("name", "")), str(dest.get("namespace", ""))
        if not destination_allowed(project, server, name, namespace):
            report.fail(
                "graph", where, f"destination namespace {namespace} is not allowed by AppProject {spec['project']}"
            )
        repos = [str(r) for r in (project.get("spec") or {}).get("sourceRepos") or []]
        for source in app.sources:
            if not glob_allows(repos, str(source.get("repoURL"))):
                report.fail("graph", where, f"repoURL {source.get('repoURL')} is not in AppProject {spec['project']}")
        bad = sorted(
            {
                str(ns)
                for d in app.docs
                if (ns := (d.get("metadata") or {}).get("namespace"))
                and not destination_allowed(project, server, name, ns)
            }
        )
        if bad:
            report.fail(
                "graph", where, f"objects in namespaces {', '.join(bad)} that AppProject {spec['project']} denies"
            )
    report.stats["graph"] = {"applications": len(apps), "projects": len(projects)}


def check_waves(
    apps: Mapping[str, App], chart_docs: Mapping[str, list[dict[str, Any]]], schemas: Schemas, report: Report
) -> None:
    """Each custom resource's Application syncs no earlier than the one installing its CRD."""
    everything = {name: app.docs + chart_docs.get(name, []) for name, app in apps.items()}
    providers: dict[str, set[str]] = defaultdict(set)
    for group, names in CRD_PROVIDERS.items():
        providers[group].update(n for n in names if n in apps)
    for name, docs in everything.items():
        for doc in docs:
            if doc.get("kind") == "CustomResourceDefinition":
                providers[str((doc.get("spec") or {}).get("group"))].add(name)
    checked: set[tuple[str, str]] = set()
    for name, docs in everything.items():
        for doc in docs:
            group = group_of(str(doc.get("apiVersion", "")))
            if group in schemas.builtin_groups or not group or group in BOOTSTRAP_GROUPS or (name, group) in checked:
                continue
            checked.add((name, group))
            owners = providers.get(group, set())
            where = f"Application {name}"
            if not owners:
                report.fail(
                    "waves", where, f"{doc.get('kind')} ({group}): no Application provides {group} (CRD_PROVIDERS)"
                )
            elif name not in owners:
                first = min(owners, key=lambda o: apps[o].wave)
                if apps[first].wave > apps[name].wave:
                    report.fail(
                        "waves",
                        where,
                        f"wave {apps[name].wave} uses {doc.get('kind')} ({group}) but its provider {first} "
                        f"syncs later (wave {apps[first].wave})",
                    )
    report.stats["waves"] = {"checked": len(checked)}


# --------------------------------------------------------------------------------------------
# (f) Helm charts whose source the Go module proxy carries.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartSource:
    """Where an upstream repository keeps its chart; its module version for a chart version."""

    module: str
    subdir: str
    # Chart version -> module version: the release tag whose tree holds that chart version.
    offset: tuple[int, int] = (0, 0)  # (major, minor) to add: kyverno chart 3.9.x is app 1.19.x
    # The release tool writes the version into Chart.yaml (it is v0.0.0 in the tree).
    stamp_version: bool = False
    # Chart versions whose module version follows no rule: (chart version, module version) pairs.
    releases: tuple[tuple[str, str], ...] = ()

    def module_version(self, chart_version: str) -> str:
        if self.releases:
            return dict(self.releases).get(chart_version.removeprefix("v"), "")
        match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", chart_version)
        if not match:
            return ""
        major, minor, patch = (int(g) for g in match.groups())
        return f"v{major + self.offset[0]}.{minor + self.offset[1]}.{patch}"


# Keyed by chart name. Charts of other projects live in Helm repositories or chart-only Git
# repositories, which this machine cannot reach.
OFFLINE_CHARTS: dict[str, ChartSource] = {
    "cilium": ChartSource("github.com/cilium/cilium", "install/kubernetes/cilium"),
    "cert-manager": ChartSource(
        "github.com/cert-manager/cert-manager", "deploy/charts/cert-manager", stamp_version=True
    ),
    "external-dns": ChartSource("sigs.k8s.io/external-dns", "charts/external-dns", offset=(-1, 0)),
    "descheduler": ChartSource("sigs.k8s.io/descheduler", "charts/descheduler"),
    "kyverno": ChartSource("github.com/kyverno/kyverno", "charts/kyverno", offset=(-2, 10)),
    "external-secrets": ChartSource("github.com/external-secrets/external-secrets", "deploy/charts/external-secrets"),
    # The chart is released on its own schedule from the same repository: checked pairs only.
    "metrics-server": ChartSource(
        "sigs.k8s.io/metrics-server",
        "charts/metrics-server",
        releases=(("3.12.2", "v0.8.0"), ("3.13.0", "v0.8.1"), ("3.13.1", "v0.9.0")),
    ),
}


NO_OFFLINE_SOURCE = "no offline source: no module the Go proxy serves carries this chart (Helm repository only)"


def go_download(module: str, version: str, toolchain: str) -> tuple[Path | None, str]:
    """The module's extracted directory in GOMODCACHE, fetching it through the proxy once."""
    cmd = ["go", "mod", "download", "-json", f"{module}@{version}"]
    env = {"GO111MODULE": "on", "GOFLAGS": "-mod=mod"}
    code, out, err = run(cmd, cwd=Path(tempfile.gettempdir()), env=env)
    if code != 0 and "requires go" in out and toolchain:
        code, out, err = run(cmd, cwd=Path(tempfile.gettempdir()), env={**env, "GOTOOLCHAIN": toolchain})
    try:
        data = json.loads(out)
    except ValueError:
        return None, tail(err or out, 2)
    if data.get("Error") or not data.get("Dir"):
        return None, str(data.get("Error") or "no module directory")
    return Path(data["Dir"]), ""


def module_dir(source: ChartSource, version: str, module_version: str, toolchain: str) -> tuple[Path | None, str]:
    if shutil.which("go") is None:
        return None, "the go command is not installed (charts come from the Go module proxy)"
    if not module_version:
        return None, f"no {source.module} release is known to carry chart version {version} (ChartSource.releases)"
    moddir, error = go_download(source.module, module_version, toolchain)
    if moddir is None:
        return None, f"{source.module}@{module_version} is not available: {error}"
    return moddir, ""


def cached_chart(name: str, version: str, source: ChartSource, toolchain: str) -> tuple[Path | None, str]:
    """$HOMELAB_CACHE/charts/<name>-<version>: the chart out of its module zip, version-checked."""
    dest = cache_root() / "charts" / f"{name}-{version}"
    marker = dest / ".homelab-source.json"
    if marker.is_file():
        return dest, ""
    module_version = source.module_version(version)
    moddir, error = module_dir(source, version, module_version, toolchain)
    if moddir is None:
        return None, error
    chart_dir = moddir / source.subdir
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file():
        return None, f"{source.module}@{module_version} has no chart in {source.subdir}"
    meta = yaml.safe_load(chart_yaml.read_text(encoding="utf-8")) or {}
    if source.stamp_version:
        meta["version"] = meta["appVersion"] = module_version
    if str(meta.get("version")).removeprefix("v") != version.removeprefix("v"):
        return None, f"{source.module}@{module_version} carries chart version {meta.get('version')}, not {version}"
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(chart_dir, tmp)
    for path in tmp.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # module cache files are read-only
    (tmp / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    (tmp / marker.name).write_text(json.dumps({"module": source.module, "version": module_version}), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest, ""


def dotted(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
        )
    return out


def without_disabled_dependencies(chart: Path, values: Mapping[str, Any], workdir: Path) -> tuple[Path | None, str]:
    """A chart whose missing dependencies are all switched off by the values renders without them
    (ArgoCD would fetch them and render nothing); one that needs a missing dependency cannot render."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8")) or {}
    deps = meta.get("dependencies") or []
    subcharts = list((chart / "charts").iterdir()) if (chart / "charts").is_dir() else []
    vendored = {re.sub(r"-v?\d+\.\d+\.\d+.*\.tgz$", "", p.name) for p in subcharts}
    missing = [d for d in deps if d.get("name") not in vendored]
    if not missing:
        return chart, ""
    needed = [d["name"] for d in missing if not d.get("condition") or dotted(values, str(d["condition"])) is not False]
    if needed:
        return None, f"needs chart dependencies {', '.join(needed)} from {missing[0].get('repository')} (not offline)"
    copy = workdir / f"chart-{chart.name}"
    shutil.copytree(chart, copy)
    meta["dependencies"] = [d for d in deps if d not in missing]
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    (copy / "Chart.lock").unlink(missing_ok=True)
    return copy, ""


@dataclass
class ChartJob:
    app: App
    source: dict[str, Any]
    chart_dir: Path


def helm_values(job: ChartJob, tree: Path, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    """helm's -f/--set arguments for the Application's helm settings, and the merged values."""
    helm = job.source.get("helm") or {}
    args: list[str] = []
    merged = yaml.safe_load((job.chart_dir / "values.yaml").read_text(encoding="utf-8")) or {}
    for value_file in helm.get("valueFiles") or []:
        rel = str(value_file).partition("/")[2] if str(value_file).startswith("$") else ""
        path = tree / rel if rel else job.chart_dir / str(value_file)
        args += ["-f", str(path)]
        merged = deep_merge(merged, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    inline = helm.get("valuesObject") or (yaml.safe_load(helm["values"]) if helm.get("values") else None)
    if inline:
        path = workdir / f"{job.app.name}-inline-values.yaml"
        path.write_text(yaml.safe_dump(inline), encoding="utf-8")
        args += ["-f", str(path)]
        merged = deep_merge(merged, inline)
    for param in helm.get("parameters") or []:
        flag = "--set-string" if param.get("forceString") else "--set"
        args += [flag, f"{param['name']}={param['value']}"]
    return args, merged


def render_chart(
    job: ChartJob, helm: str, tree: Path, workdir: Path, ctx: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    try:
        values_args, merged = helm_values(job, tree, workdir)
    except (OSError, yaml.YAMLError) as exc:
        return [], f"cannot read its values: {exc}"
    chart, reason = without_disabled_dependencies(job.chart_dir, merged, workdir)
    if chart is None:
        return [], reason
    spec = job.app.doc.get("spec") or {}
    helm_opts = job.source.get("helm") or {}
    cmd = [
        helm,
        "template",
        str(helm_opts.get("releaseName") or job.app.name),
        str(chart),
        "--namespace",
        str((spec.get("destination") or {}).get("namespace") or "default"),
        "--kube-version",
        str(ctx["kube_version"]),
        *values_args,
    ]
    if not helm_opts.get("skipCrds"):
        cmd.append("--include-crds")
    for api in ctx["api_versions"]:
        cmd += ["--api-versions", api]
    code, out, err = run(cmd)
    if code != 0:
        return [], f"helm template failed: {tail(err, 4)}"
    return [d for d in load_yaml_docs(out) if argocd_applies(d)], ""


# Helm hooks ArgoCD has no equivalent for; it ignores objects that carry only these
# (ArgoCD's docs, user-guide/helm.md "Helm Hooks").
IGNORED_HELM_HOOKS = frozenset({"test", "test-success", "test-failure", "pre-rollback", "post-rollback"})


def argocd_applies(doc: Mapping[str, Any]) -> bool:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    hooks = {h.strip() for h in str(annotations.get("helm.sh/hook", "")).split(",") if h.strip()}
    return "argocd.argoproj.io/hook" in annotations or not hooks or not hooks <= IGNORED_HELM_HOOKS


def chart_pins(charts_file: Path, versions_file: Path) -> dict[str, dict[str, Any]]:
    """gitops_charts, with `{{ x_version }}` references to versions.yml resolved (cilium's pin)."""
    pins = read_yaml_file(charts_file).get("gitops_charts") or {}
    versions = read_yaml_file(versions_file)
    out: dict[str, dict[str, Any]] = {}
    for key, pin in pins.items():
        if isinstance(pin, Mapping):
            ref = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(pin.get("version", "")).strip())
            out[str(key)] = {**pin, "version": str(versions.get(ref.group(1), pin["version"]))} if ref else dict(pin)
    return out


def render_charts(
    apps: Mapping[str, App], tools: Mapping[str, str], tree: Path, workdir: Path, *, opts: Options, report: Report
) -> tuple[dict[str, list[dict[str, Any]]], list[ChartResult]]:
    """Render every offline-available chart an Application uses; a result per gitops_charts pin."""
    pins = chart_pins(opts.charts_file, opts.versions_file)
    results = {key: ChartResult(key, str(p.get("chart")), str(p.get("version"))) for key, p in pins.items()}
    by_chart = {(r.chart, r.version): r for r in results.values()}
    jobs: list[tuple[ChartJob, ChartResult]] = []
    for app in apps.values():
        for source in app.charts:
            name, version = str(source.get("chart")), str(source.get("targetRevision"))
            result = by_chart.get((name, version))
            if result is None:
                result = results.setdefault(f"{name}@{version}", ChartResult(f"{name}@{version}", name, version))
                result.reason = "not pinned in gitops_charts"
            result.apps.append(app.name)
            offline = OFFLINE_CHARTS.get(name)
            if offline is None:
                result.reason = result.reason or NO_OFFLINE_SOURCE
                continue
            chart_dir, why = cached_chart(name, version, offline, opts.toolchain)
            if chart_dir is None:
                result.reason = why
                continue
            result.schema = (chart_dir / "values.schema.json").is_file()
            jobs.append((ChartJob(app, source, chart_dir), result))
    for result in results.values():
        if not result.apps and not result.reason:
            result.reason = "no Application of this tree uses it"
    ctx = {"kube_version": opts.kube_version, "api_versions": opts.api_versions}
    rendered: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with concurrent.futures.ThreadPoolExecutor(max_workers=CPUS) as pool:
        futures = {pool.submit(render_chart, job, tools["helm"], tree, workdir, ctx): (job, res) for job, res in jobs}
        for future, (job, result) in futures.items():
            docs, why = future.result()
            if why:
                if why.startswith("helm template failed"):
                    report.fail("charts", f"Application {job.app.name}", f"{result.chart} {result.version}: {why}")
                result.reason = why
                continue
            result.rendered = True
            result.objects += len(docs)
            rendered[job.app.name] += docs
    return dict(rendered), sorted(results.values(), key=lambda r: r.key)


# --------------------------------------------------------------------------------------------
# The run: every check, one summary.
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    crd_schemas: Path
    versions_file: Path
    charts_file: Path
    tools_file: Path
    kube_version: str = ""
    toolchain: str = ""
    api_versions: list[str] = field(default_factory=list)


def default_crd_schemas() -> Path:
    return Path(os.environ.get("HOMELAB_CRD_SCHEMAS") or REPO.parent / "shared" / "crd-schemas")


def provided_api_versions(apps: Mapping[str, App], crd_dir: Path) -> list[str]:
    """`group/version[/Kind]` of the CRDs the tree installs: the capabilities ArgoCD hands helm."""
    groups = set(BOOTSTRAP_GROUPS) | {g for g, names in CRD_PROVIDERS.items() if any(n in apps for n in names)}
    out: set[str] = set()
    for group in groups:
        for path in (crd_dir / group).glob("*.json"):
            version = path.stem.rpartition("_")[2]
            out.add(f"{group}/{version}")
    return sorted(out)


def validate(tree: Path, opts: Options, report: Report) -> None:
    tools = find_tools()
    with report.timed("schemas-prepare"):
        schemas = prepare_schemas(opts.crd_schemas, opts.versions_file, report)
    with report.timed("kustomize"):
        kdirs = discover(tree, report)
        build_all(tools["kustomize"], tree, kdirs, report)
    with report.timed("secrets"):
        origin = check_secrets(tree, kdirs, report)
    with report.timed("graph"):
        apps, repo = collect_apps(tree, kdirs, report)
        check_reachability(apps, kdirs, report)
        check_projects(apps, report)
    report.stats["repo"] = repo
    with tempfile.TemporaryDirectory(prefix="validate-tree-") as tmp:
        workdir = Path(tmp)
        opts.api_versions = provided_api_versions(apps, opts.crd_schemas)
        chart_docs: dict[str, list[dict[str, Any]]] = {}
        if report.wants("charts"):
            with report.timed("charts"):
                chart_docs, chart_results = render_charts(apps, tools, tree, workdir, opts=opts, report=report)
            report.stats["charts"] = [vars(r) for r in chart_results]
        with report.timed("waves"):
            check_waves(apps, chart_docs, schemas, report)
        sources = [Rendered(f"kustomize build {k.rel}", k.docs, text=k.text) for k in roots(kdirs)]
        sources += [Rendered(f"helm template {name}", docs, name) for name, docs in sorted(chart_docs.items())]
        run_tools(sources, tools, schemas, workdir, origin=origin, report=report)


def run_tools(
    sources: Sequence[Rendered],
    tools: Mapping[str, str],
    schemas: Schemas,
    workdir: Path,
    *,
    origin: Mapping[str, str],
    report: Report,
) -> None:
    """kubeconform and kyverno side by side, each once over everything."""
    (workdir / "schemas").mkdir()
    (workdir / "kyverno").mkdir()
    files = write_sources(sources, workdir / "schemas")
    inputs = kyverno_inputs(sources, workdir / "kyverno")
    origin_by_id = {obj_id(d): s.label if s.app else origin_of(origin, d) for s in sources for d in s.docs}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        started = time.perf_counter()
        schema_future = (
            pool.submit(run, kubeconform_cmd(tools["kubeconform"], schemas, files)) if report.wants("schemas") else None
        )
        kyverno_future = (
            pool.submit(run, kyverno_cmd(tools["kyverno"], inputs[0])) if inputs and report.wants("kyverno") else None
        )
        if schema_future:
            check_schemas(schema_future.result(), files, schemas, origin, report)
            report.timings["schemas"] = round(time.perf_counter() - started, 2)
        if report.wants("kyverno"):
            check_kyverno(
                kyverno_future.result() if kyverno_future else None, inputs[1] if inputs else {}, origin_by_id, report
            )
            report.timings["kyverno"] = round(time.perf_counter() - started, 2)


def schema_lines(stats: Mapping[str, Any], t: Mapping[str, float]) -> list[str]:
    s = stats.get("schemas") or {}
    kinds = ", ".join(f"{kind} {n}" for kind, n in (s.get("by_kind") or {}).items())
    lines = [f"  schemas    {s.get('valid', 0)} objects valid (strict) in {t.get('schemas', 0):.1f} s: {kinds}"]
    lines.append(f"             core: {s.get('core', '?')} (prepared in {t.get('schemas-prepare', 0):.1f} s)")
    lines += [f"             crd-schemas {name}: {n}" for name, n in (s.get("crd_schemas") or {}).items()]
    lines += [f"             skipped (allowlist) {kind}: {why}" for kind, why in (s.get("skipped") or {}).items()]
    return lines


def kyverno_lines(stats: Mapping[str, Any], t: Mapping[str, float]) -> list[str]:
    ky = stats.get("kyverno") or {}
    return [
        f"  kyverno    {ky.get('policies', 0)} policies, {ky.get('exceptions', 0)} exceptions on"
        f" {ky.get('resources', 0)} objects: {ky.get('fail', 0)} Enforce and {ky.get('warn', 0)} Audit violations,"
        f" {ky.get('error', 0)} errors, {ky.get('skip', 0)} excepted  ({t.get('kyverno', 0):.1f} s)"
    ]


def chart_lines(stats: Mapping[str, Any], t: Mapping[str, float]) -> list[str]:
    charts = stats.get("charts") or []
    done = sum(1 for c in charts if c["rendered"])
    lines = [f"  charts     {done} of {len(charts)} pinned charts rendered offline  ({t.get('charts', 0):.1f} s)"]
    for c in charts:
        if c["rendered"]:
            schema = "values checked against values.schema.json" if c["schema"] else "no values.schema.json"
            state = f"rendered for {', '.join(c['apps'])}: {c['objects']} objects, {schema}"
        else:
            state = f"not rendered: {c['reason']}"
        lines.append(f"             {c['chart']} {c['version']}: {state}")
    return lines


def summary_lines(report: Report) -> list[str]:
    stats, t = report.stats, report.timings
    k, g = stats.get("kustomize") or {}, stats.get("graph") or {}
    lines = [
        f"validate_tree: {report.tree} (repository {stats.get('repo') or '?'})",
        f"  kustomize  {k.get('built', 0)} directories built, {k.get('components', 0)} components"
        f" through their includers  ({t.get('kustomize', 0):.1f} s)",
    ]
    if report.wants("schemas"):
        lines += schema_lines(stats, t)
    if report.wants("kyverno"):
        lines += kyverno_lines(stats, t)
    if report.wants("secrets"):
        lines.append(f"  secrets    {(stats.get('secrets') or {}).get('files', 0)} files scanned")
    if report.wants("graph"):
        lines.append(
            f"  graph      {g.get('applications', 0)} Applications, {g.get('projects', 0)} AppProjects;"
            f" {(stats.get('waves') or {}).get('checked', 0)} (Application, custom-resource group) pairs wave-checked"
        )
    if report.wants("charts"):
        lines += chart_lines(stats, t)
    lines += [f"  note: {note}" for note in report.notes]
    lines.append(f"  total      {t.get('total', 0):.1f} s")
    if report.findings:
        lines.append(f"FAILED: {len(report.findings)} problem(s)")
        lines += [f"  [{f.check}] {f.where}: {f.message}" for f in report.findings]
    else:
        lines.append("OK: the tree is valid")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path, help="the rendered tree (gitops_repo_local_path)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--only", nargs="+", choices=CHECKS, default=[], metavar="CHECK", help=f"run only: {', '.join(CHECKS)}"
    )
    parser.add_argument("--crd-schemas", type=Path, default=None, help="CRD schema folder (HOMELAB_CRD_SCHEMAS)")
    parser.add_argument("--defaults", type=Path, default=DEFAULTS_DIR, help="cluster_defaults defaults folder")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    versions_file = args.defaults / "versions.yml"
    tools_file = args.defaults / "tools.yml"
    versions = read_yaml_file(versions_file)
    toolchain = str(read_yaml_file(tools_file).get("go_toolchain_version", "")) if tools_file.is_file() else ""
    return Options(
        crd_schemas=(args.crd_schemas or default_crd_schemas()).resolve(),
        versions_file=versions_file,
        charts_file=args.defaults / "charts.yml",
        tools_file=tools_file,
        kube_version=str(versions.get("kubernetes_version", "")),
        toolchain=f"go{toolchain}" if toolchain else "",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tree = args.tree.resolve()
    report = Report(tree, only=frozenset(args.only))
    started = time.perf_counter()
    try:
        if not tree.is_dir():
            raise CannotValidate(f"{tree} is not a directory")
        validate(tree, options(args), report)
    except CannotValidate as exc:
        print(f"validate_tree: cannot validate: {exc}", file=sys.stderr)
        return 2
    report.timings["total"] = round(time.perf_counter() - started, 2)
    if args.json:
        doc = {
            "tree": str(tree),
            "valid": not report.findings,
            "findings": [vars(f) for f in report.findings],
            "stats": report.stats,
            "timings": report.timings,
            "notes": report.notes,
        }
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(summary_lines(report)))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
