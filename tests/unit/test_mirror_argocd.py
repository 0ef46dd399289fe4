"""lab/mirror/argocd_images.py: the `argocd-images` group of lab/mirror/build.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script

mb = load_script("mirror_build_argocd", REPO / "lab/mirror/build.py")
ai = mb.argocd_images

INSTALL = """
apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-cm}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: argocd-redis}
spec:
  template:
    spec:
      initContainers:
      - name: secret-init
        image: quay.io/argoproj/argocd:v3.6.1
      containers:
      - name: redis
        image: public.ecr.aws/docker/library/redis:8.10.1-alpine
        args: [--save, "", --appendonly, "no", --requirepass $(REDIS_PASSWORD)]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: argocd-application-controller}
spec:
  template:
    spec:
      containers:
      - {name: c, image: quay.io/argoproj/argocd:v3.6.1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: argocd-dex-server}
spec:
  template:
    spec:
      containers:
      - {name: dex, image: ghcr.io/dexidp/dex:v2.46.0}
"""

TOOL_VERSIONS = """#!/bin/sh
# renovate: datasource=github-releases depName=helm/helm
HELM_VERSION=4.3.1
KUSTOMIZE_VERSION=5.8.3
protoc_version=29.3
GIT_LFS_VERSION=3.8.1
"""


def test_group_is_default_mirror_content(tmp_path: Path) -> None:
    arts = mb.artifacts(mb.read_pins(), "go1.26.8")
    group = mb.select(arts, ["argocd-images"])
    assert [a.name for a in group] == ["argocd-image", "argocd-redis-image"]
    assert "argocd-images" in mb.GROUPS
    # `make mirror` builds it: the lab runs ArgoCD from these images.
    assert "argocd-images" not in mb.OPT_IN_GROUPS
    assert {a.name for a in group} <= {a.name for a in mb.select(arts, [])}
    assert all(not a.local and a.root(mb.Layout(tmp_path)) == tmp_path / "mirror" for a in group)
    assert {a.version for a in group} == {mb.pin(mb.read_pins(), "argocd_version")}


def test_recipes_change_with_the_go_version_and_the_dockerfiles() -> None:
    pins = mb.read_pins()
    one = {a.name: a.recipe_hash for a in mb.select(mb.artifacts(pins, "go1.26.8"), ["argocd-images"])}
    two = {a.name: a.recipe_hash for a in mb.select(mb.artifacts(pins, "go1.26.9"), ["argocd-images"])}
    assert one["argocd-image"] != two["argocd-image"]
    # The redis image has no Go in it.
    assert one["argocd-redis-image"] == two["argocd-redis-image"]
    recipes = ai.image_recipes({"go": "go1.26.8", "arch": "amd64"}, "1.27.3")
    assert recipes["argocd-image"]["dockerfile"] == ai.argocd_dockerfile()
    assert recipes["argocd-redis-image"]["entrypoint"] == ai.REDIS_ENTRYPOINT


def test_manifest_images_and_refs_by_role() -> None:
    assert ai.manifest_images(INSTALL) == [
        "ghcr.io/dexidp/dex:v2.46.0",
        "public.ecr.aws/docker/library/redis:8.10.1-alpine",
        "quay.io/argoproj/argocd:v3.6.1",
    ]
    assert ai.argocd_image_refs(INSTALL, "3.6.1") == {
        "argocd": "quay.io/argoproj/argocd:v3.6.1",
        "redis": "public.ecr.aws/docker/library/redis:8.10.1-alpine",
        "dex": "ghcr.io/dexidp/dex:v2.46.0",
    }
    with pytest.raises(ValueError, match=re.escape("expected quay.io/argoproj/argocd:v3.7.0")):
        ai.argocd_image_refs(INSTALL, "3.7.0")
    no_dex = INSTALL.partition("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: argocd-dex-server}")[0]
    assert ai.argocd_image_refs(no_dex, "3.6.1")["dex"] == ""


def test_tool_versions_and_tools() -> None:
    pins = ai.tool_versions(TOOL_VERSIONS)
    assert pins == {"helm": "4.3.1", "kustomize": "5.8.3", "git-lfs": "3.8.1"}
    tools = {t.name: t for t in ai.image_tools({**pins, "kustomize": "5.9.0"})}
    assert tools["helm"].pkg == "helm.sh/helm/v4/cmd/helm"
    assert "-X helm.sh/helm/v4/internal/version.version=v4.3.1" in tools["helm"].ldflags("T")
    assert tools["kustomize"].ldflags("2026-01-01T00:00:00Z") == [
        "-X sigs.k8s.io/kustomize/api/provenance.version=kustomize/v5.9.0",
        "-X sigs.k8s.io/kustomize/api/provenance.buildDate=2026-01-01T00:00:00Z",
    ]
    assert tools["git-lfs"].pkg == "github.com/git-lfs/git-lfs/v3"
    with pytest.raises(ValueError, match="GIT_LFS_VERSION"):
        ai.tool_versions("HELM_VERSION=4.3.1\nKUSTOMIZE_VERSION=5.8.3\n")
    with pytest.raises(ValueError, match=re.escape("helm 3.18.0")):
        ai.image_tools({**pins, "helm": "3.18.0"}, "5.8.2")


def test_unserved_tool_pins_fall_back_to_the_collections() -> None:
    pins = {"helm": "4.3.1", "kustomize": "5.8.3", "git-lfs": "3.8.1"}
    assert ("kustomize", "5.8.3") in ai.UNSERVED_TOOL_PINS
    tools = {t.name: t for t in ai.image_tools(pins, "5.8.2")}
    assert tools["kustomize"].version == "5.8.2"
    assert "-X sigs.k8s.io/kustomize/api/provenance.version=kustomize/v5.8.2" in tools["kustomize"].ldflags("T")
    # Only while ArgoCD pins exactly the unserved version.
    assert {t.name: t for t in ai.image_tools({**pins, "kustomize": "5.9.0"}, "5.8.2")}["kustomize"].version == "5.9.0"
    with pytest.raises(ValueError, match="kustomize_version"):
        ai.image_tools(pins)


def test_argocd_ldflags_make_version_report_the_tag() -> None:
    flags = ai.argocd_ldflags("3.6.1", "2026-11-04T13:21:06Z", "v0.37.0")
    pkg = "github.com/argoproj/argo-cd/v3/common"
    # GetVersion returns gitTag only with a commit, a tag and a clean tree.
    assert f"-X {pkg}.gitTag=v3.6.1" in flags
    assert f"-X {pkg}.gitCommit=v3.6.1" in flags
    assert f"-X {pkg}.gitTreeState=clean" in flags
    assert f"-X {pkg}.version=3.6.1" in flags
    assert f"-X {pkg}.kubectlVersion=v0.37.0" in flags


def test_wrapper_replaces_pin_the_gitops_engine_and_copy_the_rest() -> None:
    engine = "github.com/argoproj/argo-cd/gitops-engine/v3"
    replaces = [
        {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "k8s.io/api", "Version": "v0.37.0"}},
        {"Old": {"Path": engine}, "New": {"Path": "./gitops-engine"}},
    ]
    pinned, copied = ai.wrapper_replaces(replaces, {engine: "v3.6.1"})
    assert pinned == [(engine, "v3.6.1")]
    assert copied == [("k8s.io/api", "k8s.io/api", "v0.37.0")]
    gomod = mb.wrapper_gomod("homelab.lab/mirror/argocd", [(ai.ARGOCD_MODULE, "v3.6.1")], pinned, copied)
    assert f"\t{engine} => {engine} v3.6.1" in gomod
    with pytest.raises(ValueError, match="teach"):
        ai.wrapper_replaces([{"Old": {"Path": "x"}, "New": {"Path": "../x"}}], {})
    with pytest.raises(ValueError, match="teach"):
        ai.wrapper_replaces([{"Old": {"Path": "x", "Version": "v1"}, "New": {"Path": "y", "Version": "v2"}}], {})


def test_argocd_dockerfile_follows_upstreams_layout() -> None:
    text = ai.argocd_dockerfile("base:tag")
    lines = text.splitlines()
    assert lines[0] == "FROM base:tag"
    # Numeric user: runAsNonRoot without runAsUser (most ArgoCD pods) needs it.
    assert lines[-2:] == ["USER 999", "WORKDIR /home/argocd"]
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in lines
    for name in ai.ARGOCD_LINKS:
        assert f"ln -s /usr/local/bin/argocd /usr/local/bin/{name}" in text
    assert {"argocd-server", "argocd-repo-server", "argocd-git-ask-pass"} <= set(ai.ARGOCD_LINKS)
    for package in ("git", "tini", "gpg", "openssh-client"):
        assert f" {package} " in text
    assert "COPY helm kustomize git-lfs /usr/local/bin/" in lines
    assert "mkdir -p tls gpg/source gpg/keys" in text
    # The node image's systemd settings do not leak into it.
    assert "ENV container=" in lines
    assert "STOPSIGNAL SIGTERM" in lines
    assert "nice -n 19" in text


def test_redis_dockerfile_runs_the_manifests_args() -> None:
    lines = ai.redis_dockerfile("base:tag").splitlines()
    assert lines[0] == "FROM base:tag"
    assert lines[-3:] == ['ENTRYPOINT ["docker-entrypoint.sh"]', "EXPOSE 6379", 'CMD ["redis-server"]']
    assert any("useradd -r -g redis -u 999" in line for line in lines)
    # install.yaml gives only args: the entrypoint puts redis-server in front of options.
    assert 'set -- redis-server "$@"' in ai.REDIS_ENTRYPOINT
