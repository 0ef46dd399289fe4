#!/usr/bin/env python3
"""Builds the lab's offline mirror (upstream download layout + OCI images) from source via the Go module proxy."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
# lab/mirror/argocd_images.py: the argocd-images group (given this module to build with).
import argocd_images

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "roles/cluster_defaults/defaults/main/versions.yml"
TOOLS_FILE = REPO / "roles/cluster_defaults/defaults/main/tools.yml"
ARCH = "amd64"
GROUPS = ("node", "control-plane", "tools", "gitops", "validate-tools", "datapath", "argocd-images")
# Groups of programs for this machine ($HOMELAB_CACHE/tools/bin, on the Makefile's PATH), not
# mirror content: built only when named with --only, and left out of mirror/manifest.json.
LOCAL_GROUPS = ("validate-tools",)
# Groups built only when named with --only (not by `make mirror`): the local ones.
OPT_IN_GROUPS = LOCAL_GROUPS
# Bump when the build logic changes in a way the declarative recipes below do not capture:
# every stamp then stops matching and the next run rebuilds everything (cheaply, from Go's cache).
RECIPE_REVISION = 1
# ArgoCD's install manifests by variant, as paths in its repository (and module zip).
ARGOCD_MANIFESTS = {"standard": "manifests/install.yaml", "ha": "manifests/ha/install.yaml"}
STATUS_TAIL_LINES = 40


class BuildError(Exception):
    """A build step failed; the message says which and what to change."""


# --------------------------------------------------------------------------------------------
# Pure parts: versions, upstream layout, recipes and stamps (unit-tested).
# --------------------------------------------------------------------------------------------


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Return every `*_version` pin from versions.yml as a string."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BuildError(f"cannot read versions file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BuildError(f"{path} is not a YAML mapping")
    return {str(k): str(v) for k, v in data.items() if str(k).endswith("_version")}


def read_pins() -> dict[str, str]:
    """The pins of versions.yml (what the roles install) and tools.yml (the test tools)."""
    return read_versions(VERSIONS_FILE) | read_versions(TOOLS_FILE)


def pin(versions: Mapping[str, str], key: str) -> str:
    """One pinned version, with an error naming the file to edit when it is missing."""
    value = versions.get(key, "").strip().removeprefix("v")
    if not value:
        raise BuildError(f"{key} is not pinned in {VERSIONS_FILE} or {TOOLS_FILE}")
    return value


def go_version_tuple(version: str) -> tuple[int, ...]:
    """`go1.26.8`, `1.27` or `1.27.0` as a comparable tuple."""
    return tuple(int(part) for part in version.removeprefix("go").split("."))


def toolchain_for(module_go: str, local_go: str, pinned: str) -> str:
    """GOTOOLCHAIN for a module: '' when the local Go satisfies its `go` line, else go<pinned>.

    Go would otherwise fetch the exact toolchain the go line names (go1.27.0); the pinned one
    is a single, cached download shared by every tool that needs it.
    """
    if go_version_tuple(module_go) <= go_version_tuple(local_go):
        return ""
    if not pinned or go_version_tuple(pinned) < go_version_tuple(module_go):
        raise BuildError(f"the module needs Go {module_go}: pin go_toolchain_version >= {module_go} in {TOOLS_FILE}")
    return f"go{pinned}"


def cache_root(env: Mapping[str, str]) -> Path:
    """HOMELAB_CACHE, defaulting like the Makefile does."""
    value = env.get("HOMELAB_CACHE", "")
    return Path(value) if value else Path.home() / ".cache" / "homelab-bootstrap"


def k8s_binary_path(version: str, name: str, arch: str = ARCH) -> PurePosixPath:
    """dl.k8s.io layout of one Kubernetes binary."""
    return PurePosixPath(f"dl.k8s.io/release/v{version}/bin/linux/{arch}/{name}")


def github_release_path(repo: str, tag: str, filename: str) -> PurePosixPath:
    """GitHub release-asset layout: github.com/<owner>/<repo>/releases/download/<tag>/<file>."""
    return PurePosixPath(f"github.com/{repo}/releases/download/{tag}/{filename}")


def containerd_tarball_path(version: str, arch: str = ARCH) -> PurePosixPath:
    name = f"containerd-{version}-linux-{arch}.tar.gz"
    return github_release_path("containerd/containerd", f"v{version}", name)


def runc_binary_path(version: str, arch: str = ARCH) -> PurePosixPath:
    return github_release_path("opencontainers/runc", f"v{version}", f"runc.{arch}")


def cni_tarball_path(version: str, arch: str = ARCH) -> PurePosixPath:
    name = f"cni-plugins-linux-{arch}-v{version}.tgz"
    return github_release_path("containernetworking/plugins", f"v{version}", name)


def crictl_tarball_path(version: str, arch: str = ARCH) -> PurePosixPath:
    name = f"crictl-v{version}-linux-{arch}.tar.gz"
    return github_release_path("kubernetes-sigs/cri-tools", f"v{version}", name)


def helm_tarball_path(version: str, arch: str = ARCH) -> PurePosixPath:
    return PurePosixPath(f"get.helm.sh/helm-v{version}-linux-{arch}.tar.gz")


def cilium_chart_path(version: str) -> PurePosixPath:
    """helm.cilium.io keeps each chart archive beside index.yaml at the repository root."""
    return PurePosixPath(f"helm.cilium.io/cilium-{version}.tgz")


def argocd_manifest_path(version: str, variant: str = "standard") -> PurePosixPath:
    """ArgoCD's install manifest as raw.githubusercontent.com serves it at the release tag."""
    if variant not in ARGOCD_MANIFESTS:
        raise ValueError(f"unknown ArgoCD install variant {variant!r}; one of {', '.join(ARGOCD_MANIFESTS)}")
    return PurePosixPath(f"raw.githubusercontent.com/argoproj/argo-cd/v{version}/{ARGOCD_MANIFESTS[variant]}")


def gateway_api_crds_path(version: str) -> PurePosixPath:
    """Gateway API's standard-channel install manifest, a release asset of kubernetes-sigs/gateway-api."""
    return github_release_path("kubernetes-sigs/gateway-api", f"v{version}", "standard-install.yaml")


def gateway_api_standard_install(module_dir: Path) -> str:
    """standard-install.yaml as upstream's hack/build-install-yaml.sh assembles it from the tag.

    The license boilerplate and a title, then every config/crd/standard/gateway*.yaml in glob
    order, each after a `---` and a comment naming the file.
    """
    files = sorted((module_dir / "config/crd/standard").glob("gateway*.yaml"))
    if not files:
        raise BuildError(f"{module_dir} has no config/crd/standard/gateway*.yaml")
    parts = [(module_dir / "hack/boilerplate/boilerplate.sh.txt").read_text(encoding="utf-8")]
    parts.append("#\n# Gateway API Standard channel install\n#\n")
    for path in files:
        rel = path.relative_to(module_dir).as_posix()
        parts.append(f"---\n#\n# {rel}\n#\n{path.read_text(encoding='utf-8')}")
    return "".join(parts)


# Cilium's image build (images/cilium, images/runtime, images/operator in the module zip).
CILIUM_MODULE = "github.com/cilium/cilium"
# Upstream Makefile's BPF_SRCFILES_IGNORE: what `make install-bpf` leaves out of /var/lib/cilium/bpf.
CILIUM_BPF_IGNORED_DIRS = ("tests", "complexity-tests", "custom")
CILIUM_BPF_IGNORED_FILES = (".gitignore", "Makefile", "Makefile.bpf", ".rebuild_all")
CILIUM_BPF_IGNORED_SUFFIXES = (".i", ".s")


def bpf_source_files(rel_paths: Sequence[str]) -> list[str]:
    """The bpf/ files `make install-bpf` copies (paths relative to bpf/), sorted as upstream (LC_ALL=C)."""
    keep = []
    for rel in rel_paths:
        parts = PurePosixPath(rel).parts
        if parts[0] in CILIUM_BPF_IGNORED_DIRS or rel in CILIUM_BPF_IGNORED_FILES:
            continue
        if rel.endswith(CILIUM_BPF_IGNORED_SUFFIXES):
            continue
        keep.append(rel)
    return sorted(keep)


def envoy_version_sha(cilium_dockerfile: str) -> str:
    """The cilium-envoy commit images/cilium/Dockerfile pins, as Makefile.defs derives it for the agent."""
    for line in cilium_dockerfile.splitlines():
        if line.startswith("ARG CILIUM_ENVOY_IMAGE="):
            tag = line.split("=", 1)[1].split("@", 1)[0].rpartition(":")[2]
            return tag.rpartition("-")[2]
    raise BuildError("images/cilium/Dockerfile has no ARG CILIUM_ENVOY_IMAGE")


def cilium_ldflags(version: str, commit_time: str, envoy_sha: str, module: str = CILIUM_MODULE) -> list[str]:
    """Makefile.defs' and hubble/Makefile's version stamps.

    ciliumVersion is `<VERSION> <git short hash> <git author date>` (three fields, which
    pkg/version parses); the proxy serves no commit hash, so the tag stands in for it.
    """
    return [
        f"-X '{module}/pkg/version.ciliumVersion={version} v{version} {commit_time}'",
        f"-X {module}/pkg/envoy.requiredEnvoyVersionSHA={envoy_sha}",
        f"-X {module}/hubble/pkg.Version=v{version}",
    ]


def unserved_replaces(requires: Mapping[str, str], table: Mapping[tuple[str, str], str]) -> list[tuple[str, str, str]]:
    """Replace lines (old, new, version) for the required module versions the proxy does not serve.

    An entry applies only while upstream still requires exactly that version, so a version
    bump never silently keeps a stand-in. A replacement starting with `./` is a stub module
    directory in the wrapper (version '').
    """
    out: list[tuple[str, str, str]] = []
    for (path, version), replacement in sorted(table.items()):
        if requires.get(path) != version:
            continue
        if replacement.startswith("./"):
            out.append((path, replacement, ""))
        else:
            out.append((path, path, replacement))
    return out


def dependency_drift(upstream: Mapping[str, str], built: Sequence[tuple[str, str]], main: str) -> list[str]:
    """Modules a wrapper links at other versions than upstream's go.mod requires (empty: none)."""
    drift = []
    for path, version in sorted(set(built)):
        if path == main:
            continue
        want = upstream.get(path)
        if want != version:
            drift.append(f"{path} {version} (upstream: {want or 'not required'})")
    return drift


# images/runtime/install-runtime-deps.sh's packages plus what images/runtime/Dockerfile adds
# from its own images: jq; clang (cilium-llvm 19.1.7: Debian 12 has clang 19.1.7 too); bpftool.
CILIUM_RUNTIME_PACKAGES = (
    "bash-completion",
    "iproute2",
    "iptables",
    "ipset",
    "kmod",
    "ca-certificates",
    "libatomic1",
    "jq",
    "clang-19",
    "bpftool",
)
CILIUM_LLVM_MAJOR = 19

# kubernetes-sigs/iptables-wrappers (not served by the Go module proxy), as the shell script its
# Go version replaced: on first use, point the iptables/ip6tables alternatives (and their -save,
# -restore slaves) at the backend the node already uses, then run the command again.
IPTABLES_WRAPPER = """#!/bin/sh
# iptables-wrapper: pick iptables-legacy or iptables-nft like the node, then re-run "$0".
set -eu
count() { grep -cE "$1" || true; }
hint='^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)'
nft_hint=$( (iptables-nft-save -t mangle || true; ip6tables-nft-save -t mangle || true) 2>/dev/null | count "$hint")
if [ "$nft_hint" -ne 0 ]; then
    mode=nft
else
    # No `-t mangle` for legacy: it would create the table.
    legacy_hint=$( (iptables-legacy-save || true; ip6tables-legacy-save || true) 2>/dev/null | count "$hint")
    if [ "$legacy_hint" -ne 0 ]; then
        mode=legacy
    else
        legacy=$( (iptables-legacy-save || true; ip6tables-legacy-save || true) 2>/dev/null | count '^-')
        nft=$( (timeout 5 sh -c 'iptables-nft-save; ip6tables-nft-save' || true) 2>/dev/null | count '^-')
        if [ "$legacy" -ge "$nft" ]; then mode=legacy; else mode=nft; fi
    fi
fi
update-alternatives --set iptables "/usr/sbin/iptables-$mode" >/dev/null
update-alternatives --set ip6tables "/usr/sbin/ip6tables-$mode" >/dev/null
if [ "$(readlink -f "$0")" = /usr/sbin/iptables-wrapper ]; then
    echo "iptables-wrapper: $0 still runs the wrapper after selecting iptables-$mode" >&2
    exit 1
fi
exec "$0" "$@"
"""


def iptables_wrapper_install() -> str:
    """Shell commands making the wrapper the top-priority iptables and ip6tables alternative."""
    wrapper = "/usr/sbin/iptables-wrapper"
    cmds = []
    for family in ("iptables", "ip6tables"):
        slaves = " ".join(f"--slave /usr/sbin/{family}-{op} {family}-{op} {wrapper}" for op in ("restore", "save"))
        cmds.append(f"update-alternatives --install /usr/sbin/{family} {family} {wrapper} 100 {slaves}")
        cmds.append(f"update-alternatives --set {family} {wrapper}")
    return " && ".join(cmds)


def cilium_agent_dockerfile(base: str, packages: Sequence[str] = CILIUM_RUNTIME_PACKAGES) -> str:
    """quay.io/cilium/cilium: the runtime image's packages on Debian, then images/cilium's release stage.

    The build context holds bin/ (-> /usr/bin), cilium-cni, loopback, the three scripts,
    iptables-wrapper and bpf/. Package installation runs under `nice -n 19` inside the build.
    """
    apt = (
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        + " ".join(packages)
        + " && apt-get clean && rm -rf /var/lib/apt/lists/*"
    )
    lines = [
        f"FROM {base}",
        f"RUN nice -n 19 sh -c '{apt}'",
        # The agent runs `clang`; Debian names it clang-19 (upstream ships /usr/local/bin/clang).
        f"RUN ln -s /usr/bin/clang-{CILIUM_LLVM_MAJOR} /usr/local/bin/clang",
        "COPY iptables-wrapper /usr/sbin/iptables-wrapper",
        f"RUN {iptables_wrapper_install()}",
        'RUN echo ". /etc/profile.d/bash_completion.sh" >> /etc/bash.bashrc',
        "COPY bin/ /usr/bin/",
        "RUN ln -s cilium-dbg /usr/bin/cilium",
        "COPY bash_completion.d/ /etc/bash_completion.d/",
        "COPY cilium-cni /opt/cni/bin/cilium-cni",
        "COPY loopback /cni/loopback",
        "COPY init-container.sh install-plugin.sh cni-uninstall.sh /",
        "COPY bpf/ /var/lib/cilium/bpf/",
        "RUN chmod 0750 /var/lib/cilium",
        "ENV HUBBLE_SERVER=unix:///var/run/cilium/hubble.sock",
        "ENV INITSYSTEM=SYSTEMD",
        # The node image is a systemd container; this one is not.
        "ENV container=",
        "STOPSIGNAL SIGTERM",
        "WORKDIR /home/cilium",
        "ENTRYPOINT []",
        'CMD ["/usr/bin/cilium-dbg"]',
        'LABEL maintainer="maintainer@cilium.io"',
    ]
    return "\n".join(lines) + "\n"


def cilium_operator_dockerfile(certs_from: str, variant: str = "generic") -> str:
    """quay.io/cilium/operator-<variant>: FROM scratch, a CA bundle, the binary, GOPS_CONFIG_DIR."""
    lines = [
        f"FROM {certs_from} AS certs",
        # A subdirectory keeps its mode through COPY (the copied directory itself would not).
        "RUN mkdir -p /tmp/home/gops && chmod 0777 /tmp/home/gops",
        "FROM scratch",
        # buildkit gives a scratch image this PATH; the legacy builder leaves it unset.
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
        f"COPY cilium-operator-{variant} /usr/bin/cilium-operator-{variant}",
        "COPY --from=certs /tmp/home/ /home/",
        "WORKDIR /",
        "ENV GOPS_CONFIG_DIR=/home/gops",
        'LABEL maintainer="maintainer@cilium.io"',
    ]
    return "\n".join(lines) + "\n"


def checksum_path(path: PurePosixPath, suffix: str = ".sha256") -> PurePosixPath:
    """The checksum file published beside a download (`<file><suffix>`)."""
    return path.with_name(path.name + suffix)


def runc_checksum_path(version: str) -> PurePosixPath:
    """runc publishes one `runc.sha256sum` per release listing every asset."""
    return github_release_path("opencontainers/runc", f"v{version}", "runc.sha256sum")


def checksum_line(sha256: str, filename: str) -> str:
    """`<sha256>  <filename>` (sha256sum format), which get_url's `checksum: sha256:<url>` parses."""
    return f"{sha256}  {filename}\n"


def image_tar_name(ref: str) -> str:
    """`registry.k8s.io/coredns/coredns:v1.14.6` -> `coredns_v1.14.6.tar`."""
    repo, _, tag = ref.rpartition(":")
    if not repo or not tag or "/" in tag:
        raise ValueError(f"image reference without a tag: {ref}")
    return f"{repo.rsplit('/', 1)[-1]}_{tag}.tar"


def k8s_staging_version(kubernetes_version: str) -> str:
    """Staging modules (k8s.io/api, ...) are tagged v0.<minor>.<patch> for Kubernetes 1.<minor>.<patch>."""
    major, minor, patch = kubernetes_version.split(".")
    if major != "1":
        raise BuildError(f"unexpected Kubernetes major version in {kubernetes_version}")
    return f"v0.{minor}.{patch}"


def k8s_ldflags(version: str, build_date: str) -> list[str]:
    """The version stamps hack/lib/version.sh sets; kubeadm picks its image tags from gitVersion."""
    major, minor = version.split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion=v{version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={build_date}",
        ]
    return flags


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """Stable hash of a declarative build recipe (key order does not matter)."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def make_stamp(
    name: str, version: str, rhash: str, outputs: Sequence[Mapping[str, Any]], seconds: float
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "recipe_hash": rhash,
        "build_seconds": round(seconds, 1),
        "outputs": list(outputs),
    }


def stamp_is_current(stamp: Mapping[str, Any] | None, version: str, rhash: str, mirror: Path) -> bool:
    """True when the stamp records this version and recipe and every output is still in place."""
    if not stamp or stamp.get("version") != version or stamp.get("recipe_hash") != rhash:
        return False
    outputs = stamp.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return False
    for out in outputs:
        path = mirror / str(out.get("path", ""))
        if not path.is_file() or path.stat().st_size != out.get("size"):
            return False
    return True


def load_stamp(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def wrapper_gomod(
    module: str,
    requires: Sequence[tuple[str, str]],
    replaces: Sequence[tuple[str, str]],
    copied: Sequence[tuple[str, str, str]] = (),
) -> str:
    """go.mod of a wrapper module that builds upstream commands from the module proxy.

    `replaces` maps a module path to the version it is pinned to. Only the main module's
    replace lines count, and upstream's `../dir` or `./staging/...` ones point at trees the
    module zips do not carry, so the wrapper pins those siblings to their released versions.
    `copied` are upstream's replace lines onto other modules (old, new, version), repeated
    as they are so the wrapper builds exactly upstream's dependencies (kyverno's fork of
    k8s.io/pod-security-admission), plus the documented stand-ins for module versions the
    proxy does not serve (CILIUM_UNSERVED; version '' for a stub directory).
    """
    lines = [f"module {module}", "", "go 1.24", "", "require ("]
    lines += [f"\t{path} {ver}" for path, ver in requires]
    lines.append(")")
    rules = [f"\t{path} => {path} {ver}" for path, ver in sorted(replaces)]
    # A copied line without a version points at a directory of the wrapper (a stub module).
    rules += [f"\t{old} => {new} {ver}".rstrip() for old, new, ver in sorted(copied)]
    if rules:
        lines += ["", "replace (", *rules, ")"]
    return "\n".join(lines) + "\n"


def tools_go(packages: Sequence[str]) -> str:
    """A build-tagged file importing the commands so `go mod tidy` keeps what they need."""
    imports = "\n".join(f'\t_ "{p}"' for p in sorted(packages))
    header = "//go:build tools\n\n// Package tools pins the upstream commands this module builds.\npackage tools\n"
    return f"{header}\nimport (\n{imports}\n)\n"


def dockerfile(copies: Sequence[tuple[str, str]], entrypoint: Sequence[str] = (), user: str = "") -> str:
    """Dockerfile of a base-less image holding static binaries."""
    lines = ["FROM scratch", "ENV PATH=/usr/local/bin"]
    lines += [f"COPY {src} {dest}" for src, dest in copies]
    if user:
        lines.append(f"USER {user}")
    if entrypoint:
        lines.append(f"ENTRYPOINT {json.dumps(list(entrypoint))}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Side effects: commands, files, Go, docker.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the mirror and the build work live under HOMELAB_CACHE."""

    cache: Path

    @property
    def mirror(self) -> Path:
        return self.cache / "mirror"

    @property
    def files(self) -> Path:
        return self.mirror / "files"

    @property
    def images(self) -> Path:
        return self.mirror / "images"

    @property
    def manifest(self) -> Path:
        return self.mirror / "manifest.json"

    @property
    def build(self) -> Path:
        return self.cache / "build"

    @property
    def stamps(self) -> Path:
        return self.build / "stamps"

    @property
    def logs(self) -> Path:
        return self.build / "logs"

    @property
    def tools_bin(self) -> Path:
        return self.cache / "tools" / "bin"


@dataclass
class Ctx:
    """What a builder needs: the layout, the pins, and the log of the artifact being built."""

    layout: Layout
    versions: Mapping[str, str]
    log: TextIO | None = None
    log_path: Path | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # Outputs are recorded relative to this: the mirror, or the cache for LOCAL_GROUPS.
    base: Path | None = None


def say(msg: str) -> None:
    print(f"mirror: {msg}", flush=True)


def run(ctx: Ctx, cmd: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run a command, appending its output to the artifact's log; raise with the tail on failure."""
    full_env = {**os.environ, **(env or {})}
    if ctx.log:
        ctx.log.write(f"\n$ {' '.join(cmd)}  (cwd={cwd or os.getcwd()})\n")
        ctx.log.flush()
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if ctx.log:
        ctx.log.write(proc.stdout + proc.stderr)
        ctx.log.flush()
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-STATUS_TAIL_LINES:])
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}\n(full log: {ctx.log_path})")
    return proc.stdout


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_file(ctx: Ctx, src: Path, rel: PurePosixPath, checksum_rel: PurePosixPath | None = None) -> None:
    """Copy a built file into the mirror's files/ tree atomically, with its checksum file."""
    dest = ctx.layout.files / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
    os.replace(tmp, dest)
    digest = sha256_file(dest)
    record(ctx, dest, digest)
    if checksum_rel is not None:
        sumfile = ctx.layout.files / checksum_rel
        sumfile.write_text(checksum_line(digest, dest.name), encoding="utf-8")
        sumfile.chmod(0o644)
        record(ctx, sumfile, sha256_file(sumfile))


def record(ctx: Ctx, path: Path, digest: str, **extra: str) -> None:
    rel = path.relative_to(ctx.base or ctx.layout.mirror).as_posix()
    ctx.outputs.append({"path": rel, "sha256": digest, "size": path.stat().st_size, **extra})


def write_tar_gz(dest: Path, members: Sequence[tuple[str, Path | None]], mtime: int) -> None:
    """A reproducible tarball: fixed mtime and owner; `None` as source makes a directory entry."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for arcname, src in members:
            info = tarfile.TarInfo(arcname)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if src is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.size = src.stat().st_size
            info.mode = 0o755 if os.access(src, os.X_OK) else 0o644
            with src.open("rb") as fh:
                tar.addfile(info, fh)
    os.replace(tmp, dest)


@dataclass(frozen=True)
class ModuleInfo:
    path: str
    version: str
    dir: Path
    gomod: Path
    time: str  # the commit time the proxy reports; used as the reproducible build date

    @property
    def epoch(self) -> int:
        return int(datetime.fromisoformat(self.time.replace("Z", "+00:00")).timestamp())


def go_download(ctx: Ctx, module: str, version: str, toolchain: str = "") -> ModuleInfo:
    """Fetch one module zip through the proxy (cached in GOMODCACHE).

    `toolchain` (GOTOOLCHAIN) for a module whose go.mod asks for a newer Go than the local
    one: the go command refuses to download it otherwise.
    """
    workdir = ctx.layout.build / "go"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"GO111MODULE": "on", **({"GOTOOLCHAIN": toolchain} if toolchain else {})}
    out = run(ctx, ["go", "mod", "download", "-json", f"{module}@{version}"], cwd=workdir, env=env)
    data = json.loads(out)
    if data.get("Error"):
        raise BuildError(f"the Go module proxy does not serve {module}@{version}: {data['Error']}")
    info = json.loads(Path(data["Info"]).read_text(encoding="utf-8"))
    return ModuleInfo(module, version, Path(data["Dir"]), Path(data["GoMod"]), str(info["Time"]))


def local_replaces(ctx: Ctx, gomod: Path) -> list[str]:
    """Module paths an upstream go.mod replaces with a directory of its own repository."""
    data = json.loads(run(ctx, ["go", "mod", "edit", "-json", str(gomod)]))
    out: list[str] = []
    for rep in data.get("Replace") or []:
        old, new = rep["Old"]["Path"], rep["New"]["Path"]
        if not new.startswith(("./", "../")):
            # A wrapper silently dropping this would build other dependency versions than upstream.
            raise BuildError(f"{gomod} replaces {old} with {new}; teach lab/mirror/build.py to copy that line")
        out.append(old)
    return out


def copied_replaces(ctx: Ctx, gomod: Path) -> list[tuple[str, str, str]]:
    """An upstream go.mod's replace lines onto other modules, to repeat in a wrapper."""
    data = json.loads(run(ctx, ["go", "mod", "edit", "-json", str(gomod)]))
    out: list[tuple[str, str, str]] = []
    for rep in data.get("Replace") or []:
        old, new = rep["Old"]["Path"], rep["New"]
        if rep["Old"].get("Version") or not new.get("Version"):
            # Version-specific or directory replaces need a recipe of their own (see local_replaces).
            raise BuildError(f"{gomod} replaces {old} with {new['Path']}; teach lab/mirror/build.py that kind")
        out.append((old, new["Path"], new["Version"]))
    return out


def module_go_line(ctx: Ctx, gomod: Path) -> str:
    """The `go` directive of an upstream go.mod (the minimum Go it builds with)."""
    return str(json.loads(run(ctx, ["go", "mod", "edit", "-json", str(gomod)])).get("Go") or "1.0")


def prepare_wrapper(ctx: Ctx, name: str, gomod: str, packages: Sequence[str], toolchain: str = "") -> Path:
    """A wrapper module in build/go/<name>; `go mod tidy` only when its inputs changed."""
    wdir = ctx.layout.build / "go" / name
    wdir.mkdir(parents=True, exist_ok=True)
    inputs = gomod + tools_go(packages) + (f"toolchain {toolchain}\n" if toolchain else "")
    marker = wdir / ".inputs.sha256"
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == digest and (wdir / "go.sum").is_file():
        return wdir
    marker.unlink(missing_ok=True)
    (wdir / "go.mod").write_text(gomod, encoding="utf-8")
    (wdir / "tools.go").write_text(tools_go(packages), encoding="utf-8")
    (wdir / "go.sum").unlink(missing_ok=True)
    run(ctx, ["go", "mod", "tidy"], cwd=wdir, env={"GOTOOLCHAIN": toolchain} if toolchain else None)
    marker.write_text(digest + "\n", encoding="utf-8")
    return wdir


def go_build(
    ctx: Ctx,
    wdir: Path,
    packages: Sequence[str],
    out: Path,
    *,
    ldflags: Sequence[str] = (),
    tags: Sequence[str] = (),
    cgo: bool = False,
    static_cgo: bool = False,
    toolchain: str = "",
) -> None:
    """One `go build` of several packages (shares compile work) into `out` (a dir when several)."""
    flags = ["-s", "-w", *ldflags]
    if static_cgo:
        flags.append("-extldflags=-static")
    # -dwarf=false: `-w` drops the debug info at link time anyway, so the compiler need not make it.
    cmd = ["go", "build", "-trimpath", "-gcflags=all=-dwarf=false", "-ldflags", " ".join(flags)]
    if tags:
        cmd += ["-tags", " ".join(tags)]
    cmd += ["-o", f"{out}/" if len(packages) > 1 else str(out), *packages]
    env = {
        "CGO_ENABLED": "1" if cgo else "0",
        "GOOS": "linux",
        "GOARCH": ARCH,
        "GOFLAGS": "-buildvcs=false",
        **compiler_gc_env(),
    }
    if toolchain:
        env["GOTOOLCHAIN"] = toolchain
    run(ctx, cmd, cwd=wdir, env=env)


def compiler_gc_env(meminfo: Path = Path("/proc/meminfo"), cpus: int | None = None) -> dict[str, str]:
    """Let the compiler and linker skip garbage collection below a memory limit.

    The compiler spends a sixth of a build collecting garbage (coredns from an empty build cache on
    this 2-core machine: 126 s by default, 106 s with GOGC=off). GOMEMLIMIT keeps that bounded: each
    of the up to `cpus` compilers running at once may use a quarter of this machine's memory divided
    by their number, at most 4 GiB, and collects only when it gets there. The binaries are the same
    (only the build IDs differ), so no artifact is rebuilt for this.
    """
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return {}
    per_compiler = min(4 << 30, total // 4 // max(1, cpus or os.cpu_count() or 1))
    if per_compiler < 512 << 20:
        return {}  # a small machine: leave Go's defaults alone
    return {"GOGC": "off", "GOMEMLIMIT": f"{per_compiler >> 20}MiB"}


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def go_version() -> str:
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError("the `go` command is not on PATH; the mirror is built with Go (/usr/local/go/bin)") from exc


# --------------------------------------------------------------------------------------------
# Builders, one per artifact.
# --------------------------------------------------------------------------------------------

K8S_NODE_CMDS = ("kubeadm", "kubelet", "kubectl")
K8S_CP_CMDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
K8S_ALL_CMDS = K8S_NODE_CMDS + K8S_CP_CMDS


def kubernetes_wrapper(ctx: Ctx) -> tuple[Path, ModuleInfo]:
    """One wrapper for every Kubernetes command, so node and control-plane share one tidy."""
    version = pin(ctx.versions, "kubernetes_version")
    info = go_download(ctx, "k8s.io/kubernetes", f"v{version}")
    staging = k8s_staging_version(version)
    replaces = [(mod, staging) for mod in local_replaces(ctx, info.gomod)]
    gomod = wrapper_gomod("homelab.lab/mirror/kubernetes", [("k8s.io/kubernetes", f"v{version}")], replaces)
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_ALL_CMDS]
    return prepare_wrapper(ctx, f"kubernetes-v{version}", gomod, pkgs), info


def build_kubernetes(ctx: Ctx, cmds: Sequence[str]) -> None:
    version = pin(ctx.versions, "kubernetes_version")
    wdir, info = kubernetes_wrapper(ctx)
    out = fresh_dir(ctx.layout.build / "out" / f"kubernetes-{'-'.join(cmds)}")
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in cmds]
    go_build(ctx, wdir, pkgs, out, ldflags=k8s_ldflags(version, info.time))
    for cmd in cmds:
        rel = k8s_binary_path(version, cmd)
        install_file(ctx, out / cmd, rel, checksum_path(rel))


def build_crictl(ctx: Ctx) -> None:
    version = pin(ctx.versions, "crictl_version")
    info = go_download(ctx, "sigs.k8s.io/cri-tools", f"v{version}")
    pkg = "sigs.k8s.io/cri-tools/cmd/crictl"
    gomod = wrapper_gomod("homelab.lab/mirror/crictl", [(info.path, info.version)], [])
    wdir = prepare_wrapper(ctx, f"crictl-v{version}", gomod, [pkg])
    out = fresh_dir(ctx.layout.build / "out" / "crictl")
    go_build(ctx, wdir, [pkg], out / "crictl", ldflags=[f"-X sigs.k8s.io/cri-tools/pkg/version.Version=v{version}"])
    rel = crictl_tarball_path(version)
    write_tar_gz(out / rel.name, [("crictl", out / "crictl")], info.epoch)
    install_file(ctx, out / rel.name, rel, checksum_path(rel))


def build_containerd(ctx: Ctx) -> None:
    version = pin(ctx.versions, "containerd_version")
    mod = "github.com/containerd/containerd/v2"
    info = go_download(ctx, mod, f"v{version}")
    cmds = ("containerd", "containerd-shim-runc-v2", "ctr")
    pkgs = [f"{mod}/cmd/{c}" for c in cmds]
    gomod = wrapper_gomod("homelab.lab/mirror/containerd", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"containerd-v{version}", gomod, pkgs)
    out = fresh_dir(ctx.layout.build / "out" / "containerd")
    bindir = out / "bin"
    bindir.mkdir()
    ldflags = [f"-X {mod}/version.Version=v{version}", f"-X {mod}/version.Package={mod}"]
    # Tags as upstream's static release build; btrfs needs cgo headers we do not want.
    go_build(ctx, wdir, pkgs, bindir, ldflags=ldflags, tags=["no_btrfs", "urfave_cli_no_docs", "osusergo", "netgo"])
    rel = containerd_tarball_path(version)
    members: list[tuple[str, Path | None]] = [("bin/", None)] + [(f"bin/{c}", bindir / c) for c in cmds]
    write_tar_gz(out / rel.name, members, info.epoch)
    install_file(ctx, out / rel.name, rel, checksum_path(rel, ".sha256sum"))


def ensure_debian_packages(marker: Path, packages: list[str], why: str) -> None:
    """Install build dependencies from Debian's packages when `marker` is missing (fresh machines)."""
    if marker.is_file():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BuildError(f"{why} needs {', '.join(packages)}: install them (apt-get install -y {' '.join(packages)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # `make test` builds the node images (which may install debootstrap) at the same time.
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", "-q", *packages]
    print(f"mirror: installing {' '.join(packages)} for {why}", flush=True)
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        # Package lists may be missing or stale on a fresh machine.
        subprocess.run([*apt, "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    if not marker.is_file():
        raise BuildError(f"{why}: installed {' '.join(packages)} but {marker} is still missing")


def build_runc(ctx: Ctx) -> None:
    version = pin(ctx.versions, "runc_version")
    mod = "github.com/opencontainers/runc"
    ensure_debian_packages(Path("/usr/include/seccomp.h"), ["libseccomp-dev", "gcc", "pkg-config"], "runc")
    info = go_download(ctx, mod, f"v{version}")
    gomod = wrapper_gomod("homelab.lab/mirror/runc", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"runc-v{version}", gomod, [mod])
    out = fresh_dir(ctx.layout.build / "out" / "runc")
    # Upstream's `make static` tags minus `libpathrs` (a Rust library Debian 12 does not ship);
    # the version comes from the embedded VERSION file.
    tags = ["seccomp", "urfave_cli_no_docs", "netgo", "osusergo"]
    go_build(ctx, wdir, [mod], out / "runc", tags=tags, cgo=True, static_cgo=True)
    rel = runc_binary_path(version)
    install_file(ctx, out / "runc", rel)
    # runc's checksum file is one per release, named runc.sha256sum, listing `<sum>  runc.<arch>`.
    install_file_checksum_only(ctx, rel, runc_checksum_path(version))


def install_file_checksum_only(ctx: Ctx, rel: PurePosixPath, checksum_rel: PurePosixPath) -> None:
    dest = ctx.layout.files / rel
    sumfile = ctx.layout.files / checksum_rel
    sumfile.write_text(checksum_line(sha256_file(dest), dest.name), encoding="utf-8")
    sumfile.chmod(0o644)
    record(ctx, sumfile, sha256_file(sumfile))


def build_cni_plugins(ctx: Ctx) -> None:
    version = pin(ctx.versions, "cni_plugins_version")
    mod = "github.com/containernetworking/plugins"
    info = go_download(ctx, mod, f"v{version}")
    # As upstream's build_linux.sh: every plugin dir under meta/main/ipam except Windows ones.
    plugin_dirs = sorted(
        d
        for kind in ("main", "ipam", "meta")
        for d in (info.dir / "plugins" / kind).iterdir()
        if d.is_dir() and d.name != "windows"
    )
    pkgs = [f"{mod}/{d.relative_to(info.dir).as_posix()}" for d in plugin_dirs]
    gomod = wrapper_gomod("homelab.lab/mirror/cni-plugins", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"cni-plugins-v{version}", gomod, pkgs)
    out = fresh_dir(ctx.layout.build / "out" / "cni-plugins")
    bindir = fresh_dir(out / "bin")
    ldflags = [f"-X {mod}/pkg/utils/buildversion.BuildVersion=v{version}"]
    go_build(ctx, wdir, pkgs, bindir, ldflags=ldflags)
    members: list[tuple[str, Path | None]] = [("./", None)]
    members += [(f"./{d.name}", bindir / d.name) for d in plugin_dirs]
    members += [(f"./{doc}", info.dir / doc) for doc in ("LICENSE", "README.md") if (info.dir / doc).is_file()]
    rel = cni_tarball_path(version)
    write_tar_gz(out / rel.name, sorted(members), info.epoch)
    install_file(ctx, out / rel.name, rel, checksum_path(rel))


# --------------------------------------------------------------------------------------------
# Control-plane images and tools.
# --------------------------------------------------------------------------------------------

LAB_DIR = REPO / "lab"


def ensure_docker(ctx: Ctx) -> None:
    """A running engine: lab/docker_engine.py when the repo has it, else dockerd in the background."""
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        return
    helper = LAB_DIR / "docker_engine.py"
    if helper.is_file():
        run(ctx, [sys.executable, str(helper)])
        return
    if shutil.which("dockerd") is None:
        raise BuildError("no docker engine: run `make docker` (or apt-get install docker.io) and rerun")
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(1)
    raise BuildError("dockerd did not answer within 60 s; see /var/log/dockerd.log")


@dataclass(frozen=True)
class ImageSpec:
    """A base-less image: (built file, path in the image) pairs plus its entrypoint/user."""

    ref: str
    files: tuple[tuple[Path, str], ...]
    entrypoint: tuple[str, ...] = ()
    user: str = ""


def build_image(ctx: Ctx, spec: ImageSpec) -> None:
    """`docker build` FROM scratch, then `docker save` into mirror/images/<name>_<tag>.tar."""
    tar_name = image_tar_name(spec.ref)
    context = fresh_dir(ctx.layout.build / "images" / tar_name.removesuffix(".tar"))
    copies = []
    for src, dest in spec.files:
        shutil.copy2(src, context / src.name)
        copies.append((src.name, dest))
    (context / "Dockerfile").write_text(dockerfile(copies, spec.entrypoint, spec.user), encoding="utf-8")
    docker_build_save(ctx, spec.ref, context)


def docker_build_save(ctx: Ctx, ref: str, context: Path, subdir: str = "") -> None:
    """`docker build` of a prepared context, then `docker save` into mirror/images/[<subdir>/]<name>_<tag>.tar."""
    ensure_docker(ctx)
    # The legacy builder: Debian's engine has no buildx plugin, and FROM scratch needs nothing else.
    run(ctx, ["docker", "build", "--tag", ref, str(context)], env={"DOCKER_BUILDKIT": "0"})
    images = ctx.layout.images / subdir if subdir else ctx.layout.images
    images.mkdir(parents=True, exist_ok=True)
    tar_name = image_tar_name(ref)
    dest = images / tar_name
    tmp = dest.with_name(f".{tar_name}.tmp")
    run(ctx, ["docker", "save", "--output", str(tmp), ref])
    tmp.chmod(0o644)
    os.replace(tmp, dest)
    record(ctx, dest, sha256_file(dest), image=ref)


def build_kubernetes_control_plane(ctx: Ctx) -> None:
    version = pin(ctx.versions, "kubernetes_version")
    build_kubernetes(ctx, K8S_CP_CMDS)
    for cmd in K8S_CP_CMDS:
        binary = ctx.layout.files / k8s_binary_path(version, cmd)
        ref = f"registry.k8s.io/{cmd}:v{version}"
        build_image(ctx, ImageSpec(ref, ((binary, f"/usr/local/bin/{cmd}"),)))


ETCD_MODULES = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdutl/v3")


def build_etcd(ctx: Ctx) -> None:
    version = pin(ctx.versions, "etcd_version")
    infos: list[ModuleInfo] = []
    for mod in ETCD_MODULES:
        try:
            infos.append(go_download(ctx, mod, f"v{version}"))
        except BuildError:
            if mod == ETCD_MODULES[0]:
                raise
            say(f"etcd {version}: {mod} is not served by the Go module proxy; image goes without it")
    # Each etcd module replaces its siblings with `../`; all of them are released at the same tag.
    siblings = {m for info in infos for m in local_replaces(ctx, info.gomod)}
    requires = [(i.path, i.version) for i in infos]
    replaces = [(m, f"v{version}") for m in sorted(siblings)]
    gomod = wrapper_gomod("homelab.lab/mirror/etcd", requires, replaces)
    wdir = prepare_wrapper(ctx, f"etcd-v{version}", gomod, [i.path for i in infos])
    out = fresh_dir(ctx.layout.build / "out" / "etcd")
    go_build(ctx, wdir, [i.path for i in infos], out)
    # `go build` names a `.../server/v3` binary after `server`; upstream ships it as `etcd`.
    (out / "server").rename(out / "etcd")
    names = ["etcd"] + [i.path.split("/")[-2] for i in infos[1:]]
    files = tuple((out / n, f"/usr/local/bin/{n}") for n in names)
    build_image(ctx, ImageSpec(f"registry.k8s.io/etcd:{version}-0", files))


def build_pause(ctx: Ctx) -> None:
    version = pin(ctx.versions, "pause_version")
    k8s = pin(ctx.versions, "kubernetes_version")
    info = go_download(ctx, "k8s.io/kubernetes", f"v{k8s}")
    source = info.dir / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise BuildError(f"{source} is missing from the k8s.io/kubernetes v{k8s} module zip")
    out = fresh_dir(ctx.layout.build / "out" / "pause")
    # CFLAGS of build/pause/Makefile; REV there is the Kubernetes tag it was built from.
    run(
        ctx,
        [
            "gcc",
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            f"-DVERSION=v{version}-v{k8s}",
            "-o",
            str(out / "pause"),
            str(source),
        ],
    )
    run(ctx, ["strip", str(out / "pause")])
    spec = ImageSpec(f"registry.k8s.io/pause:{version}", ((out / "pause", "/pause"),), ("/pause",), "65535:65535")
    build_image(ctx, spec)


def build_coredns(ctx: Ctx) -> None:
    version = pin(ctx.versions, "coredns_version")
    mod = "github.com/coredns/coredns"
    info = go_download(ctx, mod, f"v{version}")
    gomod = wrapper_gomod("homelab.lab/mirror/coredns", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"coredns-v{version}", gomod, [mod])
    out = fresh_dir(ctx.layout.build / "out" / "coredns")
    go_build(ctx, wdir, [mod], out / "coredns", ldflags=[f"-X {mod}/coremain.GitCommit=v{version}"])
    # No USER: upstream runs as nonroot with a file capability to bind :53, which a scratch
    # image built without a build stage cannot set; kubeadm's Deployment adds NET_BIND_SERVICE.
    spec = ImageSpec(f"registry.k8s.io/coredns/coredns:v{version}", ((out / "coredns", "/coredns"),), ("/coredns",))
    build_image(ctx, spec)


def helm_binary(ctx: Ctx) -> tuple[Path, ModuleInfo]:
    """The helm command, built as helm's Makefile does; returns its path and the module."""
    version = pin(ctx.versions, "helm_version")
    mod = "helm.sh/helm/v3"
    info = go_download(ctx, mod, f"v{version}")
    pkg = f"{mod}/cmd/helm"
    gomod = wrapper_gomod("homelab.lab/mirror/helm", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"helm-v{version}", gomod, [pkg])
    # As helm's Makefile: the client-go minor it was built with is the Kubernetes version `helm lint` assumes.
    client_go = run(ctx, ["go", "list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"], cwd=wdir).strip()
    k8s_minor = client_go.removeprefix("v0.").split(".")[0]
    ldflags = [
        f"-X {mod}/internal/version.version=v{version}",
        f"-X {mod}/internal/version.gitTreeState=clean",
        f"-X {mod}/pkg/lint/rules.k8sVersionMajor=1",
        f"-X {mod}/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
        f"-X {mod}/pkg/chartutil.k8sVersionMajor=1",
        f"-X {mod}/pkg/chartutil.k8sVersionMinor={k8s_minor}",
    ]
    out = fresh_dir(ctx.layout.build / "out" / "helm")
    go_build(ctx, wdir, [pkg], out / "helm", ldflags=ldflags)
    return out / "helm", info


def build_helm(ctx: Ctx) -> None:
    version = pin(ctx.versions, "helm_version")
    binary, info = helm_binary(ctx)
    out = binary.parent
    members: list[tuple[str, Path | None]] = [("linux-amd64/", None), ("linux-amd64/helm", out / "helm")]
    members += [(f"linux-amd64/{d}", info.dir / d) for d in ("LICENSE", "README.md") if (info.dir / d).is_file()]
    rel = helm_tarball_path(version)
    write_tar_gz(out / rel.name, members, info.epoch)
    install_file(ctx, out / rel.name, rel, checksum_path(rel, ".sha256sum"))


# --------------------------------------------------------------------------------------------
# GitOps: the Cilium chart, ArgoCD's install manifests and the Gateway API CRDs, from module zips.
# --------------------------------------------------------------------------------------------

CILIUM_CHART_DIR = "install/kubernetes/cilium"
ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"


def packaging_helm(ctx: Ctx) -> Path:
    """helm to package charts with: the mirror's own tarball (tools group), else tools/bin/helm."""
    version = pin(ctx.versions, "helm_version")
    tarball = ctx.layout.files / helm_tarball_path(version)
    if tarball.is_file():
        out = fresh_dir(ctx.layout.build / "out" / "packaging-helm")
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(f"linux-{ARCH}/helm")
            if member is None:
                raise BuildError(f"{tarball} has no linux-{ARCH}/helm; rebuild it: build.py --only tools --force")
            (out / "helm").write_bytes(member.read())
        (out / "helm").chmod(0o755)
        return out / "helm"
    local = ctx.layout.tools_bin / "helm"
    if local.is_file():
        return local
    raise BuildError("packaging the Cilium chart needs helm: build it first (build.py --only tools gitops)")


def build_cilium_chart(ctx: Ctx) -> None:
    """`helm package` of the chart in the release's module zip, plus the repository's index.yaml."""
    version = pin(ctx.versions, "cilium_version")
    info = go_download(ctx, CILIUM_MODULE, f"v{version}")
    chart = info.dir / CILIUM_CHART_DIR
    try:
        chart_version = str(yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))["version"])
    except (OSError, KeyError, TypeError) as exc:
        raise BuildError(f"{CILIUM_MODULE}@v{version} has no chart in {CILIUM_CHART_DIR}: {exc}") from exc
    if chart_version != version:
        raise BuildError(f"the chart in {CILIUM_MODULE}@v{version} is version {chart_version}, not {version}")
    helm = packaging_helm(ctx)
    repo = fresh_dir(ctx.layout.build / "out" / "cilium-chart")
    # helm writes nothing into the chart directory (read-only in the module cache).
    run(ctx, [str(helm), "package", str(chart), "--destination", str(repo)])
    # Relative URLs, as upstream's index: the mirror serves it from any base URL.
    run(ctx, [str(helm), "repo", "index", str(repo)])
    rel = cilium_chart_path(version)
    install_file(ctx, repo / rel.name, rel)
    install_file(ctx, repo / "index.yaml", rel.with_name("index.yaml"))


def build_argocd_manifests(ctx: Ctx) -> None:
    """install.yaml and ha/install.yaml, byte for byte as in the release tag."""
    version = pin(ctx.versions, "argocd_version")
    # argo-cd's go.mod asks for a newer Go than Debian's machines have; the proxy serves it.
    toolchain = f"go{pin(ctx.versions, 'go_toolchain_version')}"
    info = go_download(ctx, ARGOCD_MODULE, f"v{version}", toolchain)
    for variant, path in ARGOCD_MANIFESTS.items():
        src = info.dir / path
        if not src.is_file():
            raise BuildError(f"{ARGOCD_MODULE}@v{version} has no {path}")
        install_file(ctx, src, argocd_manifest_path(version, variant))


def build_gateway_api_crds(ctx: Ctx) -> None:
    """standard-install.yaml, assembled from the module zip of the release tag like upstream's release."""
    version = pin(ctx.versions, "gateway_api_version")
    info = go_download(ctx, GATEWAY_API_MODULE, f"v{version}")
    out = fresh_dir(ctx.layout.build / "out" / "gateway-api") / "standard-install.yaml"
    out.write_text(gateway_api_standard_install(info.dir), encoding="utf-8")
    install_file(ctx, out, gateway_api_crds_path(version))


# --------------------------------------------------------------------------------------------
# Datapath: the Cilium agent and operator images from the module zip.
# --------------------------------------------------------------------------------------------

# Commands of upstream's SUBDIRS_CILIUM_CONTAINER (Makefile) by package directory, under their
# Makefiles' TARGET names (`go build -o dir` would name them after the directory).
CILIUM_AGENT_CMDS = {
    "daemon": "cilium-agent",
    "cilium-dbg": "cilium-dbg",
    "cilium-health": "cilium-health",
    "cilium-health/responder": "cilium-health-responder",
    "bugtool": "cilium-bugtool",
    "hubble": "hubble",
    "tools/mount": "cilium-mount",
    "tools/sysctlfix": "cilium-sysctlfix",
    "tools/envoy-bootstrap-locality": "cilium-envoy-bootstrap-locality",
    "plugins/cilium-cni": "cilium-cni",
}
# Makefile.defs: GO_TAGS_FLAGS += osusergo, CGO_ENABLED=0; operator/Makefile adds the IPAM provider.
CILIUM_TAGS = ("osusergo",)
CILIUM_OPERATOR_TAGS = (*CILIUM_TAGS, "ipam_provider_operator")
CILIUM_SCRIPTS = {
    "init-container.sh": "images/cilium/init-container.sh",
    "install-plugin.sh": "plugins/cilium-cni/install-plugin.sh",
    "cni-uninstall.sh": "plugins/cilium-cni/cni-uninstall.sh",
}
CILIUM_IMAGE_BASE = "homelab-node:debian12"
# lab/mirror_server.py pushes mirror/images/*.tar into the lab registry: the lab runs Cilium from
# these images (a subdirectory name here would keep them out of it).
DATAPATH_IMAGES_SUBDIR = ""
# Module versions Cilium's go.mod requires that the Go module proxy does not serve (403), and
# what the wrapper builds instead. gobgp: v4.7.0 was tagged 19 hours after the pinned commit
# (2026-06-30T02:23Z), with the same requirements as far as the build goes (dependency_drift).
# mcs-api/controllers: Cilium uses one constant of it, stubbed with the value Cilium's docs give.
CILIUM_UNSERVED = {
    ("github.com/osrg/gobgp/v4", "v4.6.1-0.20260630022313-d6dee8360046"): "v4.7.0",
    ("sigs.k8s.io/mcs-api/controllers", "v0.5.2"): "./stubs/mcs-api-controllers",
}
CILIUM_STUBS = {
    "./stubs/mcs-api-controllers": {
        "go.mod": "module sigs.k8s.io/mcs-api/controllers\n\ngo 1.24\n",
        "controllers.go": (
            "// Package controllers stands in for sigs.k8s.io/mcs-api/controllers v0.5.2, which the Go\n"
            "// module proxy does not serve; Cilium uses only this constant of it.\n"
            "package controllers\n\n"
            'const DerivedServiceAnnotation = "multicluster.kubernetes.io/derived-service"\n'
        ),
    }
}


def module_requires(ctx: Ctx, gomod: Path) -> dict[str, str]:
    data = json.loads(run(ctx, ["go", "mod", "edit", "-json", str(gomod)]))
    return {r["Path"]: r["Version"] for r in data.get("Require") or []}


def cilium_packages() -> list[str]:
    return [f"{CILIUM_MODULE}/{d}" for d in CILIUM_AGENT_CMDS] + [f"{CILIUM_MODULE}/operator"]


def cilium_wrapper(ctx: Ctx) -> tuple[Path, ModuleInfo, str]:
    """The wrapper building Cilium's commands: upstream's replace, plus stand-ins for unserved versions."""
    version = pin(ctx.versions, "cilium_version")
    info = go_download_tool(ctx, CILIUM_MODULE, f"v{version}")
    toolchain = tool_toolchain(ctx, info)
    requires = module_requires(ctx, info.gomod)
    copied = copied_replaces(ctx, info.gomod) + unserved_replaces(requires, CILIUM_UNSERVED)
    name = f"cilium-v{version}"
    for _, new, ver in copied:
        if not ver:
            stub = ctx.layout.build / "go" / name / new
            stub.mkdir(parents=True, exist_ok=True)
            for fname, text in CILIUM_STUBS[new].items():
                (stub / fname).write_text(text, encoding="utf-8")
    gomod = wrapper_gomod("homelab.lab/mirror/cilium", [(CILIUM_MODULE, info.version)], [], copied)
    pkgs = cilium_packages()
    wdir = prepare_wrapper(ctx, name, gomod, pkgs, toolchain)
    # What the builds link must be upstream's versions (a stand-in's own requirements could raise some).
    tags = ",".join(CILIUM_OPERATOR_TAGS)
    env = {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": ARCH, **({"GOTOOLCHAIN": toolchain} if toolchain else {})}
    fmt = "{{with .Module}}{{.Path}} {{.Version}}{{end}}"
    listed = run(ctx, ["go", "list", "-deps", "-tags", tags, "-f", fmt, *pkgs], cwd=wdir, env=env)
    built = [(path, ver) for path, _, ver in (line.partition(" ") for line in listed.splitlines()) if ver]
    drift = dependency_drift(requires, built, CILIUM_MODULE)
    if drift:
        raise BuildError(f"the Cilium wrapper links other versions than {CILIUM_MODULE}'s go.mod: {'; '.join(drift)}")
    return wdir, info, toolchain


def timed(ctx: Ctx, what: str, step: Callable[[], None]) -> None:
    """Run a build step and report its duration (the README quotes cold build times)."""
    start = time.monotonic()
    step()
    msg = f"{what}: {time.monotonic() - start:.1f} s"
    if ctx.log:
        ctx.log.write(f"\n# {msg}\n")
    say(f"  {msg}")


def cni_loopback(ctx: Ctx, dest: Path) -> None:
    """images/runtime/build-cni.sh: the CNI loopback plugin (at the lab's cni_plugins_version)."""
    version = pin(ctx.versions, "cni_plugins_version")
    mod = "github.com/containernetworking/plugins"
    info = go_download(ctx, mod, f"v{version}")
    pkg = f"{mod}/plugins/main/loopback"
    gomod = wrapper_gomod("homelab.lab/mirror/cni-loopback", [(mod, info.version)], [])
    wdir = prepare_wrapper(ctx, f"cni-loopback-v{version}", gomod, [pkg])
    go_build(ctx, wdir, [pkg], dest, ldflags=[f"-X {mod}/pkg/utils/buildversion.BuildVersion=v{version}"])


def save_datapath_image(ctx: Ctx, ref: str, context: Path) -> None:
    docker_build_save(ctx, ref, context, DATAPATH_IMAGES_SUBDIR)


def build_cilium_agent(ctx: Ctx) -> None:
    """quay.io/cilium/cilium: upstream's agent binaries, scripts and bpf/ on Debian's runtime packages."""
    version = pin(ctx.versions, "cilium_version")
    wdir, info, toolchain = cilium_wrapper(ctx)
    envoy_sha = envoy_version_sha((info.dir / "images/cilium/Dockerfile").read_text(encoding="utf-8"))
    context = fresh_dir(ctx.layout.build / "images" / f"cilium_v{version}")
    bindir = fresh_dir(context / "bin")
    pkgs = [f"{CILIUM_MODULE}/{d}" for d in CILIUM_AGENT_CMDS]
    ldflags = cilium_ldflags(version, info.time, envoy_sha)
    timed(
        ctx,
        "go build (agent commands)",
        lambda: go_build(ctx, wdir, pkgs, bindir, ldflags=ldflags, tags=CILIUM_TAGS, toolchain=toolchain),
    )
    for pkg_dir, name in CILIUM_AGENT_CMDS.items():
        (bindir / PurePosixPath(pkg_dir).name).rename(bindir / name)
    # /opt/cni/bin/cilium-cni, not /usr/bin (plugins/cilium-cni/Makefile's CNIBINDIR).
    (bindir / "cilium-cni").rename(context / "cilium-cni")
    cni_loopback(ctx, context / "loopback")
    completions = fresh_dir(context / "bash_completion.d")
    for cmd in ("cilium-dbg", "hubble"):
        (completions / cmd).write_text(run(ctx, [str(bindir / cmd), "completion", "bash"]), encoding="utf-8")
    for name, rel in CILIUM_SCRIPTS.items():
        shutil.copyfile(info.dir / rel, context / name)
        (context / name).chmod(0o755)
    bpf = info.dir / "bpf"
    rels = [p.relative_to(bpf).as_posix() for p in bpf.rglob("*") if p.is_file()]
    for rel in bpf_source_files(rels):
        dest = context / "bpf" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bpf / rel, dest)
        dest.chmod(0o644)
    (context / "iptables-wrapper").write_text(IPTABLES_WRAPPER, encoding="utf-8")
    (context / "iptables-wrapper").chmod(0o755)
    (context / "Dockerfile").write_text(cilium_agent_dockerfile(CILIUM_IMAGE_BASE), encoding="utf-8")
    ref = f"quay.io/cilium/cilium:v{version}"
    timed(ctx, "docker build + save (agent image)", lambda: save_datapath_image(ctx, ref, context))


def build_cilium_operator(ctx: Ctx) -> None:
    """quay.io/cilium/operator-generic, the chart's default operator variant."""
    version = pin(ctx.versions, "cilium_version")
    wdir, info, toolchain = cilium_wrapper(ctx)
    envoy_sha = envoy_version_sha((info.dir / "images/cilium/Dockerfile").read_text(encoding="utf-8"))
    context = fresh_dir(ctx.layout.build / "images" / f"operator-generic_v{version}")
    binary = context / "cilium-operator-generic"
    ldflags = cilium_ldflags(version, info.time, envoy_sha)
    pkg = f"{CILIUM_MODULE}/operator"
    timed(
        ctx,
        "go build (operator-generic)",
        lambda: go_build(ctx, wdir, [pkg], binary, ldflags=ldflags, tags=CILIUM_OPERATOR_TAGS, toolchain=toolchain),
    )
    (context / "Dockerfile").write_text(cilium_operator_dockerfile(CILIUM_IMAGE_BASE), encoding="utf-8")
    ref = f"quay.io/cilium/operator-generic:v{version}"
    timed(ctx, "docker build + save (operator image)", lambda: save_datapath_image(ctx, ref, context))


# --------------------------------------------------------------------------------------------
# Validation tools for this machine ($HOMELAB_CACHE/tools/bin): tools/validate_tree.py runs them.
# --------------------------------------------------------------------------------------------


def install_tool(ctx: Ctx, src: Path, name: str) -> None:
    """Put a built command into tools/bin atomically (a running validation keeps its old inode)."""
    dest = ctx.layout.tools_bin / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, dest)
    record(ctx, dest, sha256_file(dest))


def tool_toolchain(ctx: Ctx, info: ModuleInfo) -> str:
    return toolchain_for(module_go_line(ctx, info.gomod), go_version(), ctx.versions.get("go_toolchain_version", ""))


def go_download_tool(ctx: Ctx, module: str, version: str) -> ModuleInfo:
    """go_download, retried with the pinned toolchain when the module needs a newer Go to be fetched."""
    try:
        return go_download(ctx, module, version)
    except BuildError as exc:
        if "requires go " not in str(exc):
            raise
    return go_download(ctx, module, version, f"go{pin(ctx.versions, 'go_toolchain_version')}")


KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform"
KYVERNO_MODULE = "github.com/kyverno/kyverno"


def build_kustomize(ctx: Ctx) -> None:
    version = pin(ctx.versions, "kustomize_version")
    info = go_download_tool(ctx, KUSTOMIZE_MODULE, f"v{version}")
    toolchain = tool_toolchain(ctx, info)
    gomod = wrapper_gomod("homelab.lab/tools/kustomize", [(KUSTOMIZE_MODULE, info.version)], [])
    wdir = prepare_wrapper(ctx, f"kustomize-v{version}", gomod, [KUSTOMIZE_MODULE], toolchain)
    out = fresh_dir(ctx.layout.build / "out" / "kustomize")
    # Release tags are `kustomize/vX.Y.Z`; `kustomize version` strips the prefix.
    prov = "sigs.k8s.io/kustomize/api/provenance"
    ldflags = [f"-X {prov}.version=kustomize/v{version}", f"-X {prov}.buildDate={info.time}"]
    go_build(ctx, wdir, [KUSTOMIZE_MODULE], out / "kustomize", ldflags=ldflags, tags=["netgo"], toolchain=toolchain)
    install_tool(ctx, out / "kustomize", "kustomize")


def build_kubeconform(ctx: Ctx) -> None:
    version = pin(ctx.versions, "kubeconform_version")
    info = go_download_tool(ctx, KUBECONFORM_MODULE, f"v{version}")
    toolchain = tool_toolchain(ctx, info)
    pkg = f"{KUBECONFORM_MODULE}/cmd/kubeconform"
    gomod = wrapper_gomod("homelab.lab/tools/kubeconform", [(KUBECONFORM_MODULE, info.version)], [])
    wdir = prepare_wrapper(ctx, f"kubeconform-v{version}", gomod, [pkg], toolchain)
    out = fresh_dir(ctx.layout.build / "out" / "kubeconform")
    # As upstream's .goreleaser.yml.
    ldflags = [f"-X main.version=v{version}"]
    go_build(ctx, wdir, [pkg], out / "kubeconform", ldflags=ldflags, tags=["netgo"], toolchain=toolchain)
    install_tool(ctx, out / "kubeconform", "kubeconform")


def build_kyverno_cli(ctx: Ctx) -> None:
    version = pin(ctx.versions, "kyverno_cli_version")
    info = go_download_tool(ctx, KYVERNO_MODULE, f"v{version}")
    toolchain = tool_toolchain(ctx, info)
    pkg = f"{KYVERNO_MODULE}/cmd/cli/kubectl-kyverno"
    copied = copied_replaces(ctx, info.gomod)
    gomod = wrapper_gomod("homelab.lab/tools/kyverno", [(KYVERNO_MODULE, info.version)], [], copied)
    wdir = prepare_wrapper(ctx, f"kyverno-v{version}", gomod, [pkg], toolchain)
    out = fresh_dir(ctx.layout.build / "out" / "kyverno")
    # As upstream's Makefile (CGO_ENABLED=0, BuildVersion); installed under the name its docs use.
    ldflags = [f"-X {KYVERNO_MODULE}/pkg/version.BuildVersion=v{version}"]
    go_build(ctx, wdir, [pkg], out / "kyverno", ldflags=ldflags, toolchain=toolchain)
    install_tool(ctx, out / "kyverno", "kyverno")


def build_helm_tool(ctx: Ctx) -> None:
    binary, _ = helm_binary(ctx)
    install_tool(ctx, binary, "helm")


# --------------------------------------------------------------------------------------------
# Artifacts and the run loop.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    name: str
    group: str
    version: str
    recipe: Mapping[str, Any]
    build: Callable[[Ctx], None]

    @property
    def recipe_hash(self) -> str:
        return recipe_hash({"revision": RECIPE_REVISION, "version": self.version, **self.recipe})

    @property
    def local(self) -> bool:
        """Installed for this machine under $HOMELAB_CACHE, not into the mirror."""
        return self.group in LOCAL_GROUPS

    def root(self, layout: Layout) -> Path:
        """The directory its stamp's output paths are relative to."""
        return layout.cache if self.local else layout.mirror


def artifacts(versions: Mapping[str, str], gover: str) -> list[Artifact]:
    """Every artifact in build order; node first because the node tests need it soonest."""
    k8s = pin(versions, "kubernetes_version")
    base = {"go": gover, "arch": ARCH}
    return [
        Artifact(
            "kubernetes-node",
            "node",
            k8s,
            {**base, "cmds": K8S_NODE_CMDS, "ldflags": k8s_ldflags(k8s, "<module time>")},
            lambda c: build_kubernetes(c, K8S_NODE_CMDS),
        ),
        Artifact(
            "containerd",
            "node",
            pin(versions, "containerd_version"),
            {**base, "tags": "no_btrfs urfave_cli_no_docs osusergo netgo", "layout": "bin/"},
            build_containerd,
        ),
        Artifact(
            "runc",
            "node",
            pin(versions, "runc_version"),
            {**base, "tags": "seccomp urfave_cli_no_docs netgo osusergo", "static": True},
            build_runc,
        ),
        Artifact(
            "cni-plugins",
            "node",
            pin(versions, "cni_plugins_version"),
            {**base, "layout": "flat ./"},
            build_cni_plugins,
        ),
        Artifact("crictl", "node", pin(versions, "crictl_version"), {**base, "layout": "crictl"}, build_crictl),
        Artifact(
            "kubernetes-control-plane",
            "control-plane",
            k8s,
            {
                **base,
                "cmds": K8S_CP_CMDS,
                "ldflags": k8s_ldflags(k8s, "<module time>"),
                "image": "scratch /usr/local/bin",
            },
            build_kubernetes_control_plane,
        ),
        Artifact(
            "etcd",
            "control-plane",
            pin(versions, "etcd_version"),
            {**base, "modules": ETCD_MODULES, "image": "scratch /usr/local/bin, tag -0"},
            build_etcd,
        ),
        Artifact(
            "pause",
            "control-plane",
            pin(versions, "pause_version"),
            {"kubernetes": k8s, "cc": "gcc -Os -Wall -Werror -static", "image": "scratch /pause user 65535"},
            build_pause,
        ),
        Artifact(
            "coredns",
            "control-plane",
            pin(versions, "coredns_version"),
            {**base, "image": "scratch /coredns, root"},
            build_coredns,
        ),
        Artifact("helm", "tools", pin(versions, "helm_version"), {**base, "layout": "linux-amd64/"}, build_helm),
        Artifact(
            "cilium-chart",
            "gitops",
            pin(versions, "cilium_version"),
            {"helm": pin(versions, "helm_version"), "chart": CILIUM_CHART_DIR, "index": "relative urls"},
            build_cilium_chart,
        ),
        Artifact(
            "argocd-manifests",
            "gitops",
            pin(versions, "argocd_version"),
            {"manifests": ARGOCD_MANIFESTS, "toolchain": versions.get("go_toolchain_version", "")},
            build_argocd_manifests,
        ),
        Artifact(
            "gateway-api-crds",
            "gitops",
            pin(versions, "gateway_api_version"),
            {"channel": "standard", "assembly": "hack/build-install-yaml.sh"},
            build_gateway_api_crds,
        ),
        *validate_tool_artifacts(versions, base),
        *datapath_artifacts(versions, base),
        *argocd_images.artifacts(sys.modules[__name__], versions, base),
    ]


def datapath_artifacts(versions: Mapping[str, str], base: Mapping[str, str]) -> list[Artifact]:
    """The Cilium images built from source (part of `make mirror`)."""
    cilium = pin(versions, "cilium_version")
    recipe = {
        **base,
        "toolchain": versions.get("go_toolchain_version", ""),
        "unserved": {f"{path}@{ver}": new for (path, ver), new in CILIUM_UNSERVED.items()},
        "stubs": CILIUM_STUBS,
        "ldflags": cilium_ldflags(cilium, "<module time>", "<envoy sha>"),
        "images": f"images/{DATAPATH_IMAGES_SUBDIR}/" if DATAPATH_IMAGES_SUBDIR else "images/",
    }
    agent = {
        **recipe,
        "cmds": CILIUM_AGENT_CMDS,
        "tags": CILIUM_TAGS,
        "cni_plugins": pin(versions, "cni_plugins_version"),
        "dockerfile": cilium_agent_dockerfile(CILIUM_IMAGE_BASE),
        "iptables_wrapper": IPTABLES_WRAPPER,
        "scripts": CILIUM_SCRIPTS,
        "bpf_ignored": [CILIUM_BPF_IGNORED_DIRS, CILIUM_BPF_IGNORED_FILES, CILIUM_BPF_IGNORED_SUFFIXES],
    }
    operator = {**recipe, "tags": CILIUM_OPERATOR_TAGS, "dockerfile": cilium_operator_dockerfile(CILIUM_IMAGE_BASE)}
    return [
        Artifact("cilium-agent-image", "datapath", cilium, agent, build_cilium_agent),
        Artifact("cilium-operator-image", "datapath", cilium, operator, build_cilium_operator),
    ]


def validate_tool_artifacts(versions: Mapping[str, str], base: Mapping[str, str]) -> list[Artifact]:
    """tools/validate_tree.py's commands, pinned in tools.yml (helm in versions.yml)."""
    tool = {**base, "toolchain": versions.get("go_toolchain_version", ""), "into": "tools/bin"}
    return [
        Artifact("kustomize-cli", "validate-tools", pin(versions, "kustomize_version"), tool, build_kustomize),
        Artifact("kubeconform-cli", "validate-tools", pin(versions, "kubeconform_version"), tool, build_kubeconform),
        Artifact("helm-cli", "validate-tools", pin(versions, "helm_version"), tool, build_helm_tool),
        Artifact("kyverno-cli", "validate-tools", pin(versions, "kyverno_cli_version"), tool, build_kyverno_cli),
    ]


def select(all_artifacts: Sequence[Artifact], only: Sequence[str]) -> list[Artifact]:
    """The groups named, or every mirror group (OPT_IN_GROUPS only when named)."""
    return [a for a in all_artifacts if a.group in only or (not only and a.group not in OPT_IN_GROUPS)]


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One build.py at a time per cache: two runs would race on the same outputs."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build.py run (lock {lock_path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build_one(layout: Layout, versions: Mapping[str, str], art: Artifact, force: bool) -> None:
    stamp_path = layout.stamps / f"{art.name}.json"
    rhash = art.recipe_hash
    if not force and stamp_is_current(load_stamp(stamp_path), art.version, rhash, art.root(layout)):
        say(f"{art.name} {art.version}: up to date")
        return
    layout.logs.mkdir(parents=True, exist_ok=True)
    log_path = layout.logs / f"{art.name}.log"
    say(f"{art.name} {art.version}: building (log {log_path})")
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        ctx = Ctx(layout, versions, log, log_path, base=art.root(layout))
        art.build(ctx)
    seconds = time.monotonic() - start
    # Intermediate binaries and image contexts are copies of what is now in the mirror.
    for scratch in ("out", "images"):
        shutil.rmtree(layout.build / scratch, ignore_errors=True)
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    stamp = make_stamp(art.name, art.version, rhash, ctx.outputs, seconds)
    stamp_path.write_text(json.dumps(stamp | {"group": art.group}, indent=2) + "\n", encoding="utf-8")
    say(f"{art.name} {art.version}: built in {seconds:.1f} s")


def write_manifest(layout: Layout, known: Sequence[Artifact]) -> None:
    """List every artifact with current outputs in mirror/manifest.json (all groups ever built)."""
    entries = []
    for art in (a for a in known if not a.local):
        stamp = load_stamp(layout.stamps / f"{art.name}.json")
        if stamp and stamp_is_current(stamp, art.version, art.recipe_hash, layout.mirror):
            entries.append(
                {
                    "name": art.name,
                    "group": art.group,
                    "version": art.version,
                    "recipe_hash": art.recipe_hash,
                    "build_seconds": stamp.get("build_seconds"),
                    "outputs": stamp["outputs"],
                }
            )
    doc = {"generator": "lab/mirror/build.py", "arch": ARCH, "artifacts": entries}
    layout.mirror.mkdir(parents=True, exist_ok=True)
    tmp = layout.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, layout.manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", nargs="+", choices=GROUPS, default=[], metavar="GROUP", help=f"groups: {', '.join(GROUPS)}"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = parser.parse_args(argv)
    started = time.monotonic()
    layout = Layout(cache_root(os.environ))
    try:
        versions = read_pins()
        known = artifacts(versions, go_version())
        chosen = select(known, args.only)
        with exclusive(layout.build / ".lock"):
            for art in chosen:
                try:
                    build_one(layout, versions, art, args.force)
                except BuildError as exc:
                    raise BuildError(f"{art.name} {art.version} failed: {exc}") from exc
            write_manifest(layout, known)
    except BuildError as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"done in {time.monotonic() - started:.1f} s; mirror at {layout.mirror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
