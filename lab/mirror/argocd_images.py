"""The `argocd-images` group of lab/mirror/build.py: ArgoCD's images from source.

quay.io/argoproj/argocd (the `argocd` multi-call binary from the github.com/argoproj/argo-cd/v3
module zip, on Debian with the repo server's tools, laid out like upstream's Dockerfile) and the
Redis image install.yaml names, from Debian's redis-server. build.py passes itself in (`b`),
so this file needs no import of it: its helpers (Ctx, go_download, docker_build_save, ...) are
used through that module.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3"
ARGOCD_CMD = f"{ARGOCD_MODULE}/cmd"
ARGOCD_VERSION_PKG = f"{ARGOCD_MODULE}/common"
ARGOCD_IMAGE_BASE = "homelab-node:debian12"
ARGOCD_USER_ID = 999
# The names the final stage of upstream's Dockerfile links to /usr/local/bin/argocd, plus
# argocd-git-ask-pass (cmd/main.go dispatches on it; the repo server reaches it through
# ARGOCD_BINARY_NAME, so upstream needs no link).
ARGOCD_LINKS = (
    "argocd-server",
    "argocd-repo-server",
    "argocd-cmp-server",
    "argocd-application-controller",
    "argocd-dex",
    "argocd-notifications",
    "argocd-applicationset-controller",
    "argocd-k8s-auth",
    "argocd-commit-server",
    "argocd-git-ask-pass",
)
# What upstream's Dockerfile copies into /usr/local/bin from the module's tree.
ARGOCD_SCRIPTS = ("hack/gpg-wrapper.sh", "hack/git-verify-wrapper.sh", "entrypoint.sh")
# argocd-base's apt packages (Ubuntu there, Debian 12 here: same names).
ARGOCD_PACKAGES = (
    "git",
    "tini",
    "ca-certificates",
    "gpg",
    "gpg-agent",
    "tzdata",
    "connect-proxy",
    "openssh-client",
)
# The tools upstream's builder stage installs with hack/install.sh, at hack/tool-versions.sh's pins.
HELM_V4_MODULE = "helm.sh/helm/v4"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
GIT_LFS_MODULE = "github.com/git-lfs/git-lfs/v3"
TOOL_VERSION_KEYS = {"helm": "HELM_VERSION", "kustomize": "KUSTOMIZE_VERSION", "git-lfs": "GIT_LFS_VERSION"}
# ArgoCD's tool pins that cannot be built from the proxy, and why: while hack/tool-versions.sh
# pins exactly that version, the image gets the collection's own pin (tools.yml) instead.
UNSERVED_TOOL_PINS = {
    ("kustomize", "5.8.3"): "needs k8s.io/kube-openapi v0.0.0-20261001230523-97fa35140926 (proxy: 403)",
}
REDIS_PACKAGES = ("redis-server",)
# The official image's users: redis is uid 999 in group redis (gid 1000 in the Alpine variant).
REDIS_UID = 999
REDIS_GID = 1000

# The official redis image's docker-entrypoint.sh, minus what only its own build needs: options
# (or a .conf file) as first argument run redis-server with them; started as root it drops to
# the redis user. install.yaml passes only args and runs the pod as 999.
REDIS_ENTRYPOINT = """#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \\! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
um="$(umask)"
if [ "$um" = 0022 ]; then
	umask 0077
fi
exec "$@"
"""


# --------------------------------------------------------------------------------------------
# Pure parts (unit-tested).
# --------------------------------------------------------------------------------------------


def _pod_specs(doc: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(doc, dict):
        return
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        return
    if doc.get("kind") == "Pod":
        yield spec
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        yield template["spec"]
    job = (spec.get("jobTemplate") or {}).get("spec") if isinstance(spec.get("jobTemplate"), dict) else None
    if isinstance(job, dict):
        yield from _pod_specs({"spec": job})


def manifest_images(text: str) -> list[str]:
    """Every container and init container image of the workloads in a manifest, sorted."""
    images = set()
    for doc in yaml.safe_load_all(text):
        for pod in _pod_specs(doc):
            for key in ("initContainers", "containers"):
                for container in pod.get(key) or []:
                    if isinstance(container, dict) and container.get("image"):
                        images.add(str(container["image"]))
    return sorted(images)


def argocd_image_refs(text: str, version: str) -> dict[str, str]:
    """install.yaml's images by role: argocd (must be the release's), redis and dex ('' if absent)."""
    images = manifest_images(text)
    want = f"quay.io/argoproj/argocd:v{version}"
    argocd = [i for i in images if i.rpartition(":")[0] == "quay.io/argoproj/argocd"]
    if argocd != [want]:
        raise ValueError(f"install.yaml runs {argocd or 'no ArgoCD image'}, expected {want}")

    def one(repo_suffix: str) -> str:
        found = [i for i in images if i.rpartition(":")[0].endswith(repo_suffix)]
        if len(found) > 1:
            raise ValueError(f"install.yaml names several {repo_suffix} images: {found}")
        return found[0] if found else ""

    return {"argocd": want, "redis": one("/redis"), "dex": one("/dex")}


def tool_versions(script: str) -> dict[str, str]:
    """hack/tool-versions.sh's pins of the image's tools: helm, kustomize, git-lfs."""
    assigned = dict(re.findall(r"^([A-Za-z_]+)=([^\s#]+)", script, flags=re.MULTILINE))
    out = {}
    for tool, key in TOOL_VERSION_KEYS.items():
        if key not in assigned:
            raise ValueError(f"hack/tool-versions.sh sets no {key}")
        out[tool] = assigned[key].strip("'\"").removeprefix("v")
    return out


def argocd_ldflags(version: str, build_date: str, kubectl_version: str) -> list[str]:
    """The Makefile's LDFLAGS for a release build (${PACKAGE}.version, buildDate, ..., gitTag).

    The proxy serves no commit hash: the tag stands in for gitCommit, so `argocd version`
    reports the release tag as upstream's release builds do (GetVersion needs a commit and
    a tag for that).
    """
    pkg = ARGOCD_VERSION_PKG
    return [
        f"-X {pkg}.version={version}",
        f"-X {pkg}.buildDate={build_date}",
        f"-X {pkg}.gitCommit=v{version}",
        f"-X {pkg}.gitTreeState=clean",
        f"-X {pkg}.kubectlVersion={kubectl_version}",
        f"-X {pkg}.gitTag=v{version}",
    ]


def helm_v4_ldflags(version: str) -> list[str]:
    """helm v4's Makefile for a tagged build (empty metadata, clean tree)."""
    mod = HELM_V4_MODULE
    return [
        f"-X {mod}/internal/version.version=v{version}",
        f"-X {mod}/internal/version.metadata=",
        f"-X {mod}/internal/version.gitTreeState=clean",
    ]


def kustomize_ldflags(version: str, build_date: str) -> list[str]:
    """As build.py's kustomize recipe: release tags are `kustomize/vX.Y.Z`."""
    prov = "sigs.k8s.io/kustomize/api/provenance"
    return [f"-X {prov}.version=kustomize/v{version}", f"-X {prov}.buildDate={build_date}"]


def git_lfs_ldflags(version: str) -> list[str]:
    """git-lfs's Makefile sets config.GitCommit (the version is a constant of the module)."""
    return [f"-X {GIT_LFS_MODULE}/config.GitCommit=v{version}"]


def wrapper_replaces(replaces: Sequence[Mapping[str, Any]], requires: Mapping[str, str]) -> tuple[list, list]:
    """argo-cd's go.mod replace lines for a wrapper: (pinned, copied) for build.py's wrapper_gomod.

    Replaces onto other modules are copied as they are; a directory replace (`./gitops-engine`)
    pins that module to the version argo-cd requires (the release tags it alongside). Anything
    else stops the build, so the wrapper never builds other dependency versions than upstream.
    """
    pinned: list[tuple[str, str]] = []
    copied: list[tuple[str, str, str]] = []
    for rep in replaces:
        old, new = rep["Old"], rep["New"]
        if old.get("Version"):
            raise ValueError(f"argo-cd replaces {old['Path']}@{old['Version']}: teach argocd_images.py that kind")
        if new.get("Version"):
            copied.append((old["Path"], new["Path"], new["Version"]))
        elif new["Path"].startswith("./") and old["Path"] in requires:
            pinned.append((old["Path"], requires[old["Path"]]))
        else:
            raise ValueError(f"argo-cd replaces {old['Path']} with {new['Path']}: teach argocd_images.py that kind")
    return sorted(pinned), sorted(copied)


def _apt(packages: Sequence[str]) -> str:
    """One nice'd `apt-get install` layer (the docker build shares the cores with the lab)."""
    apt = (
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        + " ".join(packages)
        + " && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/* /usr/share/doc/*"
    )
    return f"RUN nice -n 19 sh -c '{apt}'"


def _free_gid(gid: int) -> str:
    """Shell: move a group that holds `gid` (the node image's systemd-journal holds 999) to a free system gid."""
    return (
        f"if getent group {gid} >/dev/null; then "
        f"g=$(getent group {gid} | cut -d: -f1) && "
        f"new=$(for i in $(seq 998 -1 100); do getent group $i >/dev/null || {{ echo $i; break; }}; done) && "
        f'groupmod -g "$new" "$g" && find / -xdev -gid {gid} -exec chgrp -h "$g" {{}} +; fi'
    )


def _reset_node_image() -> list[str]:
    """The node image is a systemd container; these images are not."""
    return ["ENV container=", "STOPSIGNAL SIGTERM"]


def argocd_dockerfile(base: str = ARGOCD_IMAGE_BASE, packages: Sequence[str] = ARGOCD_PACKAGES) -> str:
    """quay.io/argoproj/argocd: upstream's argocd-base and final stages on Debian 12.

    The build context holds argocd, helm, kustomize, git-lfs and the three scripts.
    """
    uid = ARGOCD_USER_ID
    links = " && ".join(f"ln -s /usr/local/bin/argocd /usr/local/bin/{name}" for name in ARGOCD_LINKS)
    lines = [
        f"FROM {base}",
        'LABEL org.opencontainers.image.source="https://github.com/argoproj/argo-cd"',
        "USER root",
        f"ENV ARGOCD_USER_ID={uid} DEBIAN_FRONTEND=noninteractive",
        _apt(packages),
        f"RUN {_free_gid(uid)}",
        f"RUN groupadd -g {uid} argocd && useradd -r -u {uid} -g argocd argocd && mkdir -p /home/argocd"
        " && chown argocd:0 /home/argocd && chmod g=u /home/argocd",
        "COPY gpg-wrapper.sh git-verify-wrapper.sh entrypoint.sh /usr/local/bin/",
        "COPY helm kustomize git-lfs /usr/local/bin/",
        "RUN git lfs install --skip-repo --system",
        "RUN ln -s /usr/local/bin/entrypoint.sh /usr/local/bin/uid_entrypoint.sh",
        "WORKDIR /app/config/ssh",
        "RUN touch ssh_known_hosts && ln -sf /app/config/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts",
        "WORKDIR /app/config",
        "RUN mkdir -p tls gpg/source gpg/keys && chown argocd gpg/keys && chmod 0700 gpg/keys",
        "ENV USER=argocd",
        "ENV GRPC_ENABLE_TXT_SERVICE_CONFIG=false",
        *_reset_node_image(),
        # Setting ENTRYPOINT also drops the node image's CMD (/sbin/init); upstream has none.
        'ENTRYPOINT ["/usr/bin/tini", "--"]',
        "COPY argocd /usr/local/bin/argocd",
        f"RUN {links}",
        f"USER {uid}",
        "WORKDIR /home/argocd",
    ]
    return "\n".join(lines) + "\n"


def redis_dockerfile(base: str = ARGOCD_IMAGE_BASE, packages: Sequence[str] = REDIS_PACKAGES) -> str:
    """The redis image install.yaml names, from Debian's redis-server, laid out like the official one.

    Users as the official image (redis: uid 999, gid 1000) before the package's postinst
    (which keeps an existing system user), /data as working directory and volume,
    docker-entrypoint.sh, port 6379, CMD redis-server. The build context holds the entrypoint.
    """
    lines = [
        f"FROM {base}",
        f"RUN {_free_gid(REDIS_GID)}",
        f"RUN groupadd -r -g {REDIS_GID} redis"
        f" && useradd -r -g redis -u {REDIS_UID} -d /data -s /usr/sbin/nologin redis",
        _apt(packages),
        "RUN mkdir /data && chown redis:redis /data",
        "COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh",
        "VOLUME /data",
        "WORKDIR /data",
        *_reset_node_image(),
        'ENTRYPOINT ["docker-entrypoint.sh"]',
        "EXPOSE 6379",
        'CMD ["redis-server"]',
    ]
    return "\n".join(lines) + "\n"


def image_recipes(base: Mapping[str, str], toolchain: str, kustomize: str = "") -> dict[str, dict[str, Any]]:
    """The declarative part of each artifact's recipe (its stamp hash)."""
    argocd = {
        **base,
        "toolchain": toolchain,
        "cmd": ARGOCD_CMD,
        "ldflags": argocd_ldflags("<version>", "<module time>", "<client-go>"),
        "tools": {"pins": "hack/tool-versions.sh", "helm": helm_v4_ldflags("<v>"), "lfs": git_lfs_ldflags("<v>")},
        "kustomize": kustomize_ldflags("<v>", "<module time>"),
        "unserved": {f"{tool}@{ver}": why for (tool, ver), why in UNSERVED_TOOL_PINS.items()},
        "collection_kustomize": kustomize,
        "scripts": ARGOCD_SCRIPTS,
        "dockerfile": argocd_dockerfile(),
        "images": "images/",
    }
    redis = {
        "dockerfile": redis_dockerfile(),
        "entrypoint": REDIS_ENTRYPOINT,
        "ref": "install.yaml",
        "images": "images/",
    }
    return {"argocd-image": argocd, "argocd-redis-image": redis}


# --------------------------------------------------------------------------------------------
# Builders (b: lab/mirror/build.py).
# --------------------------------------------------------------------------------------------


def artifacts(b: ModuleType, versions: Mapping[str, str], base: Mapping[str, str]) -> list[Any]:
    """build.py's Artifacts of the group (part of `make mirror`)."""
    version = b.pin(versions, "argocd_version")
    recipes = image_recipes(base, versions.get("go_toolchain_version", ""), versions.get("kustomize_version", ""))
    return [
        b.Artifact("argocd-image", "argocd-images", version, recipes["argocd-image"], lambda c: build_argocd(b, c)),
        b.Artifact(
            "argocd-redis-image", "argocd-images", version, recipes["argocd-redis-image"], lambda c: build_redis(b, c)
        ),
    ]


def _module(b: ModuleType, ctx: Any) -> Any:
    version = b.pin(ctx.versions, "argocd_version")
    # argo-cd's go.mod asks for a newer Go than Debian's; fetched as build_argocd_manifests does.
    toolchain = f"go{b.pin(ctx.versions, 'go_toolchain_version')}"
    return b.go_download(ctx, ARGOCD_MODULE, f"v{version}", toolchain)


def _refs(b: ModuleType, ctx: Any, info: Any) -> dict[str, str]:
    version = b.pin(ctx.versions, "argocd_version")
    text = (info.dir / "manifests/install.yaml").read_text(encoding="utf-8")
    try:
        return argocd_image_refs(text, version)
    except ValueError as exc:
        raise b.BuildError(str(exc)) from exc


@dataclass(frozen=True)
class GoTool:
    """A command of the image built from its module at the version ArgoCD pins."""

    name: str
    module: str
    pkg: str
    version: str
    ldflags: Callable[[str], list[str]]  # the module's commit time -> -X flags


def image_tools(pins: Mapping[str, str], collection_kustomize: str = "") -> list[GoTool]:
    """helm, kustomize and git-lfs at hack/tool-versions.sh's pins (what upstream's builder stage installs).

    A pin in UNSERVED_TOOL_PINS is replaced by the collection's own (kustomize_version).
    """
    helm, kustomize, lfs = pins["helm"], pins["kustomize"], pins["git-lfs"]
    if ("kustomize", kustomize) in UNSERVED_TOOL_PINS:
        if not collection_kustomize:
            raise ValueError(
                f"kustomize {kustomize} {UNSERVED_TOOL_PINS['kustomize', kustomize]}: pin kustomize_version"
            )
        kustomize = collection_kustomize
    if not helm.startswith("4."):
        raise ValueError(f"hack/tool-versions.sh pins helm {helm}; argocd_images.py builds helm v4")
    return [
        GoTool("helm", HELM_V4_MODULE, f"{HELM_V4_MODULE}/cmd/helm", helm, lambda _t: helm_v4_ldflags(helm)),
        GoTool("kustomize", KUSTOMIZE_MODULE, KUSTOMIZE_MODULE, kustomize, lambda t: kustomize_ldflags(kustomize, t)),
        GoTool("git-lfs", GIT_LFS_MODULE, GIT_LFS_MODULE, lfs, lambda _t: git_lfs_ldflags(lfs)),
    ]


def _go_tool(b: ModuleType, ctx: Any, tool: GoTool, out: Path) -> None:
    """One command from a wrapper module (upstream's go.mod must have no replace lines)."""
    info = b.go_download_tool(ctx, tool.module, f"v{tool.version}")
    if b.local_replaces(ctx, info.gomod):
        raise b.BuildError(f"{tool.module}@v{tool.version} replaces modules; teach argocd_images.py")
    toolchain = b.tool_toolchain(ctx, info)
    gomod = b.wrapper_gomod(f"homelab.lab/mirror/argocd-{tool.name}", [(tool.module, info.version)], [])
    wdir = b.prepare_wrapper(ctx, f"argocd-{tool.name}-v{tool.version}", gomod, [tool.pkg], toolchain)
    b.go_build(ctx, wdir, [tool.pkg], out, ldflags=tool.ldflags(info.time), toolchain=toolchain)


def build_argocd(b: ModuleType, ctx: Any) -> None:
    """quay.io/argoproj/argocd:v<version>: argocd, helm, kustomize, git-lfs, then docker build + save."""
    version = b.pin(ctx.versions, "argocd_version")
    info = _module(b, ctx)
    ref = _refs(b, ctx, info)["argocd"]
    toolchain = b.tool_toolchain(ctx, info)
    data = json.loads(b.run(ctx, ["go", "mod", "edit", "-json", str(info.gomod)]))
    requires = {r["Path"]: r["Version"] for r in data.get("Require") or []}
    try:
        pinned, copied = wrapper_replaces(data.get("Replace") or [], requires)
    except ValueError as exc:
        raise b.BuildError(str(exc)) from exc
    gomod = b.wrapper_gomod("homelab.lab/mirror/argocd", [(ARGOCD_MODULE, info.version)], pinned, copied)
    wdir = b.prepare_wrapper(ctx, f"argocd-v{version}", gomod, [ARGOCD_CMD], toolchain)
    # As the Makefile's KUBECTL_VERSION: the client-go version the build links (after replaces).
    fmt = "{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}"
    env = {"GOTOOLCHAIN": toolchain} if toolchain else None
    client_go = b.run(ctx, ["go", "list", "-m", "-f", fmt, "k8s.io/client-go"], cwd=wdir, env=env).strip()
    context = b.fresh_dir(ctx.layout.build / "images" / f"argocd_v{version}")
    ldflags = argocd_ldflags(version, info.time, client_go)
    b.timed(
        ctx,
        "go build (argocd)",
        lambda: b.go_build(ctx, wdir, [ARGOCD_CMD], context / "argocd", ldflags=ldflags, toolchain=toolchain),
    )
    try:
        pins = tool_versions((info.dir / "hack/tool-versions.sh").read_text(encoding="utf-8"))
        tools = image_tools(pins, ctx.versions.get("kustomize_version", "").removeprefix("v"))
    except ValueError as exc:
        raise b.BuildError(str(exc)) from exc
    for tool in tools:
        b.timed(ctx, f"go build ({tool.name} {tool.version})", lambda t=tool: _go_tool(b, ctx, t, context / t.name))
    for rel in ARGOCD_SCRIPTS:
        dest = context / Path(rel).name
        shutil.copyfile(info.dir / rel, dest)
        dest.chmod(0o755)
    (context / "Dockerfile").write_text(argocd_dockerfile(), encoding="utf-8")
    b.timed(
        ctx,
        "docker build + save (argocd image)",
        lambda: b.docker_build_save(ctx, ref, context),
    )


def build_redis(b: ModuleType, ctx: Any) -> None:
    """The Redis image under the exact name and tag install.yaml runs."""
    info = _module(b, ctx)
    ref = _refs(b, ctx, info)["redis"]
    if not ref:
        raise b.BuildError("install.yaml names no redis image")
    context = b.fresh_dir(ctx.layout.build / "images" / b.image_tar_name(ref).removesuffix(".tar"))
    (context / "docker-entrypoint.sh").write_text(REDIS_ENTRYPOINT, encoding="utf-8")
    (context / "docker-entrypoint.sh").chmod(0o755)
    (context / "Dockerfile").write_text(redis_dockerfile(), encoding="utf-8")
    b.timed(ctx, "docker build + save (redis image)", lambda: b.docker_build_save(ctx, ref, context))
