"""Unit tests for the pure parts of lab/mirror/build.py: pins, upstream layout, recipes and stamps."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.conftest import REPO, load_script

DOWNLOADS = REPO / "roles/cluster_defaults/defaults/main/downloads.yml"


mb = load_script("mirror_build", REPO / "lab/mirror/build.py")


# --- versions -----------------------------------------------------------------------------


def test_read_versions_reads_the_real_pins() -> None:
    versions = mb.read_versions()
    for key in ("kubernetes_version", "etcd_version", "containerd_version", "runc_version", "helm_version"):
        assert versions[key].count(".") == 2, key


def test_read_versions_keeps_only_version_keys_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "versions.yml"
    path.write_text("kubernetes_version: 1.37.2\nother: x\ndownload_checksums: {}\nfoo_version: 3\n")
    assert mb.read_versions(path) == {"kubernetes_version": "1.37.2", "foo_version": "3"}


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n"])
def test_read_versions_rejects_non_mapping(tmp_path: Path, content: str) -> None:
    path = tmp_path / "versions.yml"
    path.write_text(content)
    with pytest.raises(mb.BuildError, match="not a YAML mapping"):
        mb.read_versions(path)


def test_read_versions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(mb.BuildError, match="cannot read"):
        mb.read_versions(tmp_path / "nope.yml")


def test_pin_strips_v_and_names_the_file_when_missing() -> None:
    assert mb.pin({"a_version": "v1.2.3"}, "a_version") == "1.2.3"
    with pytest.raises(mb.BuildError, match=r"versions\.yml"):
        mb.pin({}, "b_version")


def test_cache_root() -> None:
    assert mb.cache_root({"HOMELAB_CACHE": "/x/y"}) == Path("/x/y")
    assert mb.cache_root({}) == Path.home() / ".cache" / "homelab-bootstrap"


# --- upstream layout ------------------------------------------------------------------------


def _render_download_urls(versions: dict[str, str], variant: str = "standard") -> dict[str, str]:
    """The role's URL templates rendered with an empty prefix: the path under the mirror root."""
    data = yaml.safe_load(DOWNLOADS.read_text())
    context = {**versions, "download_url_prefix": "", "node_arch": "amd64", "argocd_install_variant": variant}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    urls = {k: v for k, v in data.items() if k.endswith("_url") and k != "download_mirror_url"}
    # URLs built from other URLs (the chart from its repository) resolve in file order.
    for key, template in urls.items():
        context[key] = urls[key] = env.from_string(template).render(context)
    return urls


def test_layout_matches_the_roles_download_urls() -> None:
    versions = mb.read_versions()
    urls = _render_download_urls(versions)
    v = {k: mb.pin(versions, k) for k in versions}
    assert urls["kubernetes_download_url"] + "/kubeadm" == str(mb.k8s_binary_path(v["kubernetes_version"], "kubeadm"))
    assert urls["containerd_download_url"] == str(mb.containerd_tarball_path(v["containerd_version"]))
    assert urls["runc_download_url"] == str(mb.runc_binary_path(v["runc_version"]))
    assert urls["cni_plugins_download_url"] == str(mb.cni_tarball_path(v["cni_plugins_version"]))
    assert urls["crictl_download_url"] == str(mb.crictl_tarball_path(v["crictl_version"]))
    assert urls["helm_download_url"] == str(mb.helm_tarball_path(v["helm_version"]))
    assert urls["cilium_chart_download_url"] == str(mb.cilium_chart_path(v["cilium_version"]))
    assert urls["cilium_chart_repo_url"] + "/index.yaml" == str(mb.cilium_chart_path("1.0.0").with_name("index.yaml"))
    for variant in ("standard", "ha"):
        manifest = _render_download_urls(versions, variant)["argocd_install_manifest_url"]
        assert manifest == str(mb.argocd_manifest_path(v["argocd_version"], variant))


def test_gitops_layout_paths() -> None:
    assert str(mb.cilium_chart_path("1.20.2")) == "helm.cilium.io/cilium-1.20.2.tgz"
    base = "raw.githubusercontent.com/argoproj/argo-cd/v3.6.1/manifests"
    assert str(mb.argocd_manifest_path("3.6.1")) == f"{base}/install.yaml"
    assert str(mb.argocd_manifest_path("3.6.1", "ha")) == f"{base}/ha/install.yaml"
    with pytest.raises(ValueError, match="unknown ArgoCD install variant"):
        mb.argocd_manifest_path("3.6.1", "core")


def test_layout_paths() -> None:
    assert str(mb.k8s_binary_path("1.37.2", "kubelet")) == "dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet"
    assert (
        str(mb.containerd_tarball_path("2.4.2"))
        == "github.com/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz"
    )
    assert (
        str(mb.runc_checksum_path("1.5.2")) == "github.com/opencontainers/runc/releases/download/v1.5.2/runc.sha256sum"
    )
    assert str(mb.helm_tarball_path("3.22.0", "arm64")) == "get.helm.sh/helm-v3.22.0-linux-arm64.tar.gz"


def test_checksum_files() -> None:
    rel = mb.crictl_tarball_path("1.37.0")
    assert mb.checksum_path(rel).name == "crictl-v1.37.0-linux-amd64.tar.gz.sha256"
    assert mb.checksum_path(rel, ".sha256sum").name == "crictl-v1.37.0-linux-amd64.tar.gz.sha256sum"
    assert mb.checksum_line("ab" * 32, "kubeadm") == f"{'ab' * 32}  kubeadm\n"


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("registry.k8s.io/kube-apiserver:v1.37.2", "kube-apiserver_v1.37.2.tar"),
        ("registry.k8s.io/coredns/coredns:v1.14.6", "coredns_v1.14.6.tar"),
        ("registry.k8s.io/etcd:3.7.3-0", "etcd_3.7.3-0.tar"),
        ("localhost:5000/pause:3.10.2", "pause_3.10.2.tar"),
    ],
)
def test_image_tar_name(ref: str, name: str) -> None:
    assert mb.image_tar_name(ref) == name


def test_image_tar_name_needs_a_tag() -> None:
    with pytest.raises(ValueError, match="without a tag"):
        mb.image_tar_name("localhost:5000/pause")


# --- Kubernetes specifics -------------------------------------------------------------------


def test_k8s_staging_version() -> None:
    assert mb.k8s_staging_version("1.37.2") == "v0.37.2"
    with pytest.raises(mb.BuildError):
        mb.k8s_staging_version("2.0.0")


def test_k8s_ldflags_stamp_both_version_packages() -> None:
    flags = mb.k8s_ldflags("1.37.2", "2026-01-01T00:00:00Z")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.37.2" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=37" in flags
        assert f"-X {pkg}.gitTreeState=clean" in flags
        assert f"-X {pkg}.buildDate=2026-01-01T00:00:00Z" in flags


# --- recipes and stamps ---------------------------------------------------------------------


def test_recipe_hash_is_order_insensitive_and_content_sensitive() -> None:
    assert mb.recipe_hash({"a": 1, "b": [1, 2]}) == mb.recipe_hash({"b": [1, 2], "a": 1})
    assert mb.recipe_hash({"a": 1}) != mb.recipe_hash({"a": 2})


def _stamped(tmp_path: Path, content: bytes = b"binary") -> dict[str, object]:
    out = tmp_path / "files" / "x" / "kubeadm"
    out.parent.mkdir(parents=True)
    out.write_bytes(content)
    outputs = [{"path": "files/x/kubeadm", "sha256": "0" * 64, "size": len(content)}]
    return mb.make_stamp("kubernetes-node", "1.37.2", "h1", outputs, 12.34)


def test_stamp_current(tmp_path: Path) -> None:
    stamp = _stamped(tmp_path)
    assert stamp["build_seconds"] == 12.3
    assert mb.stamp_is_current(stamp, "1.37.2", "h1", tmp_path)


@pytest.mark.parametrize(("version", "rhash"), [("1.37.3", "h1"), ("1.37.2", "h2")])
def test_stamp_stale_on_version_or_recipe_change(tmp_path: Path, version: str, rhash: str) -> None:
    assert not mb.stamp_is_current(_stamped(tmp_path), version, rhash, tmp_path)


def test_stamp_stale_when_output_missing_or_changed(tmp_path: Path) -> None:
    stamp = _stamped(tmp_path)
    target = tmp_path / "files/x/kubeadm"
    target.write_bytes(b"truncated")
    assert not mb.stamp_is_current(stamp, "1.37.2", "h1", tmp_path)
    target.unlink()
    assert not mb.stamp_is_current(stamp, "1.37.2", "h1", tmp_path)


def test_stamp_absent_or_broken(tmp_path: Path) -> None:
    assert not mb.stamp_is_current(None, "1.37.2", "h1", tmp_path)
    assert not mb.stamp_is_current({"version": "1.37.2", "recipe_hash": "h1", "outputs": []}, "1.37.2", "h1", tmp_path)
    broken = tmp_path / "s.json"
    broken.write_text("{not json")
    assert mb.load_stamp(broken) is None
    assert mb.load_stamp(tmp_path / "missing.json") is None


def test_artifacts_node_group_first_and_unique() -> None:
    arts = mb.artifacts(mb.read_pins(), "go1.26.8")
    names = [a.name for a in arts]
    assert len(names) == len(set(names))
    groups = [a.group for a in arts]
    assert groups == sorted(groups, key=mb.GROUPS.index)
    assert {a.name for a in mb.select(arts, ["tools"])} == {"helm"}
    assert {a.name for a in mb.select(arts, ["gitops"])} == {"cilium-chart", "argocd-manifests", "gateway-api-crds"}
    # The validation tools (for this machine) and the datapath images are built only when asked for.
    assert mb.select(arts, []) == [a for a in arts if a.group not in mb.OPT_IN_GROUPS]
    assert set(mb.LOCAL_GROUPS) <= set(mb.OPT_IN_GROUPS)
    tools = mb.select(arts, ["validate-tools"])
    assert {a.name for a in tools} == {"kustomize-cli", "kubeconform-cli", "helm-cli", "kyverno-cli"}


def test_read_pins_adds_the_tool_pins() -> None:
    pins = mb.read_pins()
    for key in ("kustomize_version", "kubeconform_version", "kyverno_cli_version", "kubernetes_version"):
        assert pins[key].count(".") == 2, key


def test_tool_outputs_live_under_the_cache_not_the_mirror(tmp_path: Path) -> None:
    layout = mb.Layout(tmp_path)
    arts = {a.name: a for a in mb.artifacts(mb.read_pins(), "go1.26.8")}
    assert arts["kyverno-cli"].root(layout) == tmp_path
    assert arts["helm"].root(layout) == layout.mirror
    assert layout.tools_bin == tmp_path / "tools" / "bin"


def test_manifest_lists_mirror_artifacts_only(tmp_path: Path) -> None:
    layout = mb.Layout(tmp_path)
    known = mb.artifacts(mb.read_pins(), "go1.26.8")
    for art in (a for a in known if a.name in ("crictl", "kubeconform-cli")):
        out = art.root(layout) / "out" / art.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"x")
        rel = out.relative_to(art.root(layout)).as_posix()
        stamp = mb.make_stamp(art.name, art.version, art.recipe_hash, [{"path": rel, "size": 1}], 1.0)
        layout.stamps.mkdir(parents=True, exist_ok=True)
        (layout.stamps / f"{art.name}.json").write_text(json.dumps(stamp))
    mb.write_manifest(layout, known)
    names = [a["name"] for a in json.loads(layout.manifest.read_text())["artifacts"]]
    assert names == ["crictl"]


@pytest.mark.parametrize(
    ("module_go", "local", "pinned", "expected"),
    [
        ("1.26", "go1.26.8", "1.27.3", ""),
        ("1.26.8", "go1.26.8", "1.27.3", ""),
        ("1.27.0", "go1.26.8", "1.27.3", "go1.27.3"),
        ("1.27", "go1.27.1", "", ""),
    ],
)
def test_toolchain_for(module_go: str, local: str, pinned: str, expected: str) -> None:
    assert mb.toolchain_for(module_go, local, pinned) == expected


@pytest.mark.parametrize("pinned", ["", "1.26.9"])
def test_toolchain_for_names_the_pin_to_raise(pinned: str) -> None:
    with pytest.raises(mb.BuildError, match=r"go_toolchain_version >= 1\.27\.0"):
        mb.toolchain_for("1.27.0", "go1.26.8", pinned)


def test_artifact_recipe_hash_follows_the_go_version() -> None:
    versions = mb.read_pins()
    one = {a.name: a.recipe_hash for a in mb.artifacts(versions, "go1.26.8")}
    again = {a.name: a.recipe_hash for a in mb.artifacts(versions, "go1.26.8")}
    other = {a.name: a.recipe_hash for a in mb.artifacts(versions, "go1.27.0")}
    assert one == again
    assert one["kubernetes-node"] != other["kubernetes-node"]


# --- generated files ------------------------------------------------------------------------


def test_wrapper_gomod_pins_local_replaces() -> None:
    text = mb.wrapper_gomod("example/w", [("k8s.io/kubernetes", "v1.37.2")], [("k8s.io/api", "v0.37.2")])
    assert "module example/w\n" in text
    assert "\tk8s.io/kubernetes v1.37.2\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.37.2\n" in text
    assert "replace" not in mb.wrapper_gomod("example/w", [("a.b/c", "v1.0.0")], [])


def test_wrapper_gomod_repeats_upstream_replaces_onto_forks() -> None:
    fork = ("k8s.io/pod-security-admission", "github.com/kyverno/pod-security-admission", "v0.0.0-2025")
    text = mb.wrapper_gomod("example/w", [("github.com/kyverno/kyverno", "v1.19.1")], [], [fork])
    assert "\tk8s.io/pod-security-admission => github.com/kyverno/pod-security-admission v0.0.0-2025\n" in text


def test_tools_go_imports_sorted_under_build_tag() -> None:
    text = mb.tools_go(["b.c/d", "a.b/c"])
    assert text.startswith("//go:build tools\n")
    assert text.index('"a.b/c"') < text.index('"b.c/d"')


@pytest.mark.parametrize(
    ("mem_kib", "cpus", "expected"),
    [
        (24 * 1024 * 1024, 2, {"GOGC": "off", "GOMEMLIMIT": "3072MiB"}),  # this lab's machine kind
        (128 * 1024 * 1024, 2, {"GOGC": "off", "GOMEMLIMIT": "4096MiB"}),  # capped at 4 GiB
        (8 * 1024 * 1024, 4, {"GOGC": "off", "GOMEMLIMIT": "512MiB"}),
        (4 * 1024 * 1024, 4, {}),  # under 512 MiB each: Go's defaults
    ],
)
def test_compiler_gc_env_bounds_memory(tmp_path: Path, mem_kib: int, cpus: int, expected: dict[str, str]) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kib} kB\nMemFree:         1000 kB\n")
    assert mb.compiler_gc_env(meminfo, cpus) == expected


@pytest.mark.parametrize("content", [None, "Nothing: here\n", "MemTotal: many kB\n"])
def test_compiler_gc_env_without_meminfo_keeps_defaults(tmp_path: Path, content: str | None) -> None:
    meminfo = tmp_path / "meminfo"
    if content is not None:
        meminfo.write_text(content)
    assert mb.compiler_gc_env(meminfo, 2) == {}


def test_go_build_skips_dwarf_and_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(mb, "run", lambda _ctx, cmd, cwd=None, env=None: seen.append((list(cmd), dict(env or {}))))
    monkeypatch.setattr(mb, "compiler_gc_env", lambda: {"GOGC": "off", "GOMEMLIMIT": "3072MiB"})
    mb.go_build(None, tmp_path, ["example.com/a"], tmp_path / "a", ldflags=["-X x.y=z"], toolchain="go1.27.3")
    cmd, env = seen[0]
    assert cmd[:5] == ["go", "build", "-trimpath", "-gcflags=all=-dwarf=false", "-ldflags"]
    assert cmd[5] == "-s -w -X x.y=z"
    assert env["GOGC"] == "off" and env["GOMEMLIMIT"] == "3072MiB" and env["GOTOOLCHAIN"] == "go1.27.3"


def test_dockerfile() -> None:
    text = mb.dockerfile([("pause", "/pause")], ["/pause"], "65535:65535")
    assert text.splitlines() == [
        "FROM scratch",
        "ENV PATH=/usr/local/bin",
        "COPY pause /pause",
        "USER 65535:65535",
        'ENTRYPOINT ["/pause"]',
    ]
    assert "USER" not in mb.dockerfile([("etcd", "/usr/local/bin/etcd")])


def test_write_tar_gz_is_reproducible(tmp_path: Path) -> None:
    src = tmp_path / "ctr"
    src.write_bytes(b"\x7fELF")
    src.chmod(0o755)
    members = [("bin/", None), ("bin/ctr", src)]
    one, two = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    mb.write_tar_gz(one, members, 1_700_000_000)
    mb.write_tar_gz(two, members, 1_700_000_000)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        assert tar.getnames() == ["bin", "bin/ctr"]
        ctr = tar.getmember("bin/ctr")
        assert (ctr.mode, ctr.uid, ctr.mtime) == (0o755, 0, 1_700_000_000)


# --- gitops group ---------------------------------------------------------------------------


def _module(tmp_path: Path, files: dict[str, str]) -> object:
    """A stand-in for a downloaded module zip: its directory with the given files."""
    for rel, text in files.items():
        (tmp_path / "mod" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mod" / rel).write_text(text)
    return mb.ModuleInfo(
        "example.org/m", "v1.0.0", tmp_path / "mod", tmp_path / "mod" / "go.mod", "2026-01-01T00:00:00Z"
    )


def test_argocd_manifests_are_copied_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"manifests/install.yaml": "kind: A\n", "manifests/ha/install.yaml": "kind: B\n"}
    calls: list[tuple[str, str, str]] = []

    def download(_ctx: object, module: str, version: str, toolchain: str = "") -> object:
        calls.append((module, version, toolchain))
        return _module(tmp_path, files)

    monkeypatch.setattr(mb, "go_download", download)
    ctx = mb.Ctx(mb.Layout(tmp_path / "cache"), {"argocd_version": "3.6.1", "go_toolchain_version": "1.27.3"})
    mb.build_argocd_manifests(ctx)
    # argo-cd's go.mod asks for Go 1.27: the download runs with the pinned toolchain.
    assert calls == [("github.com/argoproj/argo-cd/v3", "v3.6.1", "go1.27.3")]
    for variant, text in (("standard", "kind: A\n"), ("ha", "kind: B\n")):
        out = ctx.layout.files / mb.argocd_manifest_path("3.6.1", variant)
        assert out.read_text() == text
    recorded = {o["path"] for o in ctx.outputs}
    assert recorded == {f"files/{mb.argocd_manifest_path('3.6.1', v)}" for v in ("standard", "ha")}


def test_argocd_manifests_missing_from_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mb, "go_download", lambda *_a, **_k: _module(tmp_path, {"manifests/install.yaml": "x"}))
    ctx = mb.Ctx(mb.Layout(tmp_path / "cache"), {"argocd_version": "3.6.1", "go_toolchain_version": "1.27.3"})
    with pytest.raises(mb.BuildError, match=r"has no manifests/ha/install\.yaml"):
        mb.build_argocd_manifests(ctx)


@pytest.mark.parametrize(
    ("chart_yaml", "message"),
    [("name: cilium\nversion: 1.20.1\n", "is version 1.20.1, not 1.20.2"), (None, "has no chart in")],
)
def test_cilium_chart_must_match_the_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chart_yaml: str | None, message: str
) -> None:
    files = {f"{mb.CILIUM_CHART_DIR}/Chart.yaml": chart_yaml} if chart_yaml else {"README.md": ""}
    monkeypatch.setattr(mb, "go_download", lambda *_a, **_k: _module(tmp_path, files))
    ctx = mb.Ctx(mb.Layout(tmp_path / "cache"), {"cilium_version": "1.20.2", "helm_version": "3.22.0"})
    with pytest.raises(mb.BuildError, match=message):
        mb.build_cilium_chart(ctx)


def test_packaging_helm_comes_from_the_mirror_or_tools(tmp_path: Path) -> None:
    layout = mb.Layout(tmp_path)
    ctx = mb.Ctx(layout, {"helm_version": "3.22.0"})
    with pytest.raises(mb.BuildError, match="--only tools gitops"):
        mb.packaging_helm(ctx)
    layout.tools_bin.mkdir(parents=True)
    (layout.tools_bin / "helm").write_bytes(b"#!/bin/sh\n")
    assert mb.packaging_helm(ctx) == layout.tools_bin / "helm"
    binary = tmp_path / "helm"
    binary.write_bytes(b"ELF")
    mb.write_tar_gz(layout.files / mb.helm_tarball_path("3.22.0"), [("linux-amd64/helm", binary)], 0)
    unpacked = mb.packaging_helm(ctx)
    assert unpacked.read_bytes() == b"ELF"
    assert unpacked.stat().st_mode & 0o111
