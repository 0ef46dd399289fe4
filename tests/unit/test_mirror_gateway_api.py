"""lab/mirror/build.py: the Gateway API standard-install.yaml the mirror serves for the gitops role."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from tests.conftest import REPO, load_script

mb = load_script("mirror_build_gateway_api", REPO / "lab/mirror/build.py")

BOILERPLATE = "# Copyright The Kubernetes Authors.\n#\n# Licensed under the Apache License.\n"


def _module(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_mirror_path_is_the_roles_download_url() -> None:
    downloads = yaml.safe_load((REPO / "roles/cluster_defaults/defaults/main/downloads.yml").read_text())
    versions = mb.read_versions()
    url = jinja2.Template(downloads["gateway_api_crds_url"]).render(
        download_url_prefix="", gateway_api_version=mb.pin(versions, "gateway_api_version")
    )
    assert url == str(mb.gateway_api_crds_path(mb.pin(versions, "gateway_api_version")))
    assert url.endswith("/releases/download/v" + versions["gateway_api_version"] + "/standard-install.yaml")


def test_standard_install_is_assembled_like_upstreams_release_script(tmp_path: Path) -> None:
    module = _module(
        tmp_path,
        {
            "hack/boilerplate/boilerplate.sh.txt": BOILERPLATE,
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml": "kind: B\n",
            "config/crd/standard/gateway.networking.k8s.io_gateways.yaml": "kind: A\n",
            # Not a gateway*.yaml file: upstream's glob leaves it out.
            "config/crd/standard/kustomization.yaml": "resources: []\n",
            "config/crd/experimental/gateway.networking.k8s.io_tcproutes.yaml": "kind: X\n",
        },
    )
    assert mb.gateway_api_standard_install(module) == (
        BOILERPLATE
        + "#\n# Gateway API Standard channel install\n#\n"
        + "---\n#\n# config/crd/standard/gateway.networking.k8s.io_gateways.yaml\n#\nkind: A\n"
        + "---\n#\n# config/crd/standard/gateway.networking.k8s.io_httproutes.yaml\n#\nkind: B\n"
    )


def test_a_module_without_standard_crds_is_an_error(tmp_path: Path) -> None:
    module = _module(tmp_path, {"hack/boilerplate/boilerplate.sh.txt": BOILERPLATE})
    with pytest.raises(mb.BuildError, match=r"has no config/crd/standard/gateway\*\.yaml"):
        mb.gateway_api_standard_install(module)


def test_build_installs_the_manifest_into_the_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module(
        tmp_path / "mod",
        {
            "hack/boilerplate/boilerplate.sh.txt": BOILERPLATE,
            "config/crd/standard/gateway.networking.k8s.io_gateways.yaml": "kind: A\n",
        },
    )
    calls: list[tuple[str, str]] = []

    def download(_ctx: object, module_path: str, version: str, toolchain: str = "") -> object:
        calls.append((module_path, version))
        return mb.ModuleInfo(module_path, version, module, module / "go.mod", "2026-03-13T20:23:39Z")

    monkeypatch.setattr(mb, "go_download", download)
    ctx = mb.Ctx(mb.Layout(tmp_path / "cache"), {"gateway_api_version": "1.5.1"})
    mb.build_gateway_api_crds(ctx)
    assert calls == [("sigs.k8s.io/gateway-api", "v1.5.1")]
    out = ctx.layout.files / mb.gateway_api_crds_path("1.5.1")
    assert out.read_text() == mb.gateway_api_standard_install(module)
    assert [o["path"] for o in ctx.outputs] == [f"files/{mb.gateway_api_crds_path('1.5.1')}"]


def test_gateway_api_crds_are_a_gitops_artifact() -> None:
    names = {a.name: a for a in mb.artifacts(mb.read_pins(), "go1.26.8")}
    assert names["gateway-api-crds"].group == "gitops"
    assert names["gateway-api-crds"].version == mb.pin(mb.read_versions(), "gateway_api_version")
