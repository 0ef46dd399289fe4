"""lab/mirror/build.py: the opt-in `datapath` group (Cilium agent and operator images from source)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, load_script

mb = load_script("mirror_build_datapath", REPO / "lab/mirror/build.py")

ENVOY_ARG = (
    "ARG CILIUM_ENVOY_IMAGE=quay.io/cilium/cilium-envoy:v1.37.6-1789133542-"
    "cbec91f666af0bf742da986d43832932dbb26b82@sha256:af7382699576b9e65e9184efa52eeca0b58aea70ad6e511bf260c91d9f740463"
)


def test_datapath_is_mirror_content(tmp_path: Path) -> None:
    arts = mb.artifacts(mb.read_pins(), "go1.26.8")
    datapath = mb.select(arts, ["datapath"])
    assert [a.name for a in datapath] == ["cilium-agent-image", "cilium-operator-image"]
    # Part of `make mirror`: the lab runs Cilium from these images.
    assert {a.name for a in datapath} <= {a.name for a in mb.select(arts, [])}
    # Images for the mirror: listed in manifest.json once built, unlike the local tools.
    assert all(not a.local and a.root(mb.Layout(tmp_path)) == tmp_path / "mirror" for a in datapath)
    assert {a.version for a in datapath} == {mb.pin(mb.read_pins(), "cilium_version")}


def test_datapath_recipes_follow_the_dockerfiles_and_the_go_version() -> None:
    versions = mb.read_pins()
    one = {a.name: a.recipe_hash for a in mb.artifacts(versions, "go1.26.8")}
    other = {a.name: a.recipe_hash for a in mb.artifacts(versions, "go1.27.0")}
    assert one["cilium-agent-image"] != other["cilium-agent-image"]
    assert one["cilium-agent-image"] != one["cilium-operator-image"]


def test_image_names_are_upstreams() -> None:
    assert mb.image_tar_name("quay.io/cilium/cilium:v1.20.2") == "cilium_v1.20.2.tar"
    assert mb.image_tar_name("quay.io/cilium/operator-generic:v1.20.2") == "operator-generic_v1.20.2.tar"


@pytest.mark.parametrize(
    ("text", "sha"),
    [
        (
            f"# c\nARG CILIUM_BUILDER_IMAGE=quay.io/cilium/cilium-builder:x@sha256:1\n{ENVOY_ARG}\n",
            "cbec91f666af0bf742da986d43832932dbb26b82",
        ),
        ("ARG CILIUM_ENVOY_IMAGE=quay.io/cilium/cilium-envoy:abc123\n", "abc123"),
    ],
)
def test_envoy_version_sha(text: str, sha: str) -> None:
    assert mb.envoy_version_sha(text) == sha


def test_envoy_version_sha_needs_the_arg() -> None:
    with pytest.raises(mb.BuildError, match="CILIUM_ENVOY_IMAGE"):
        mb.envoy_version_sha("FROM scratch\n")


def test_cilium_ldflags_give_pkg_version_its_three_fields() -> None:
    flags = mb.cilium_ldflags("1.20.2", "2026-09-15T20:03:11Z", "cbec91f")
    assert flags[0] == "-X 'github.com/cilium/cilium/pkg/version.ciliumVersion=1.20.2 v1.20.2 2026-09-15T20:03:11Z'"
    assert "-X github.com/cilium/cilium/pkg/envoy.requiredEnvoyVersionSHA=cbec91f" in flags
    assert "-X github.com/cilium/cilium/hubble/pkg.Version=v1.20.2" in flags


def test_bpf_source_files_as_make_install_bpf() -> None:
    rels = [
        "bpf_lxc.c",
        "include/bpf/ctx/skb.h",
        "lib/nat.h",
        "tests/foo.c",
        "complexity-tests/x/y.txt",
        "custom/bytecount.h",
        "Makefile",
        "Makefile.bpf",
        ".gitignore",
        "bpf_lxc.i",
        "bpf_lxc.s",
        "LICENSE.BSD-2-Clause",
        "node_config.h",
    ]
    assert mb.bpf_source_files(rels) == [
        "LICENSE.BSD-2-Clause",
        "bpf_lxc.c",
        "include/bpf/ctx/skb.h",
        "lib/nat.h",
        "node_config.h",
    ]


UNSERVED = {
    ("example.com/a", "v1.0.1-0.2026-abc"): "v1.1.0",
    ("example.com/b", "v0.5.2"): "./stubs/b",
}


def test_unserved_replaces_only_for_the_exact_upstream_version() -> None:
    requires = {"example.com/a": "v1.0.1-0.2026-abc", "example.com/b": "v0.5.2", "example.com/c": "v1.0.0"}
    assert mb.unserved_replaces(requires, UNSERVED) == [
        ("example.com/a", "example.com/a", "v1.1.0"),
        ("example.com/b", "./stubs/b", ""),
    ]
    # Upstream moved on: the stand-in no longer applies (the proxy may serve the new version).
    assert mb.unserved_replaces({"example.com/a": "v1.2.0"}, UNSERVED) == []


def test_cilium_unserved_entries_are_well_formed() -> None:
    for (path, version), new in mb.CILIUM_UNSERVED.items():
        assert version.startswith("v"), path
        assert new.startswith(("v", "./")), path
        if new.startswith("./"):
            assert mb.CILIUM_STUBS[new]["go.mod"].startswith(f"module {path}\n")


def test_wrapper_gomod_points_stand_ins_at_stub_directories() -> None:
    copied = [("sigs.k8s.io/mcs-api/controllers", "./stubs/mcs-api-controllers", ""), ("a.b/c", "a.b/c", "v1.1.0")]
    text = mb.wrapper_gomod("example/w", [("github.com/cilium/cilium", "v1.20.2")], [], copied)
    assert "\tsigs.k8s.io/mcs-api/controllers => ./stubs/mcs-api-controllers\n" in text
    assert "\ta.b/c => a.b/c v1.1.0\n" in text


def test_dependency_drift() -> None:
    upstream = {"a.b/c": "v1.0.0", "d.e/f": "v2.0.0"}
    assert mb.dependency_drift(upstream, [("main/m", "v9"), ("a.b/c", "v1.0.0"), ("a.b/c", "v1.0.0")], "main/m") == []
    drift = mb.dependency_drift(upstream, [("a.b/c", "v1.1.0"), ("x.y/z", "v0.1.0")], "main/m")
    assert drift == ["a.b/c v1.1.0 (upstream: v1.0.0)", "x.y/z v0.1.0 (upstream: not required)"]


def test_agent_dockerfile() -> None:
    text = mb.cilium_agent_dockerfile("homelab-node:debian12", ("iproute2", "clang-19"))
    lines = text.splitlines()
    assert lines[0] == "FROM homelab-node:debian12"
    # Package installation stays at the lowest priority inside the build too.
    assert lines[1].startswith("RUN nice -n 19 sh -c 'apt-get update -q && ")
    assert "--no-install-recommends iproute2 clang-19 &&" in lines[1]
    assert "RUN ln -s /usr/bin/clang-19 /usr/local/bin/clang" in lines
    for want in (
        "COPY bin/ /usr/bin/",
        "COPY cilium-cni /opt/cni/bin/cilium-cni",
        "COPY loopback /cni/loopback",
        "COPY init-container.sh install-plugin.sh cni-uninstall.sh /",
        "COPY bpf/ /var/lib/cilium/bpf/",
        "RUN ln -s cilium-dbg /usr/bin/cilium",
        # The base is a systemd node image: undo its stop signal and entrypoint.
        "STOPSIGNAL SIGTERM",
        "ENTRYPOINT []",
        'CMD ["/usr/bin/cilium-dbg"]',
    ):
        assert want in lines, want


def test_operator_dockerfile() -> None:
    lines = mb.cilium_operator_dockerfile("homelab-node:debian12").splitlines()
    assert lines[0] == "FROM homelab-node:debian12 AS certs"
    assert "FROM scratch" in lines
    assert "COPY cilium-operator-generic /usr/bin/cilium-operator-generic" in lines
    assert any(line.startswith("ENV PATH=") and ":/usr/bin:" in line for line in lines)
    assert "ENV GOPS_CONFIG_DIR=/home/gops" in lines


def test_agent_commands_carry_upstream_target_names() -> None:
    names = list(mb.CILIUM_AGENT_CMDS.values())
    assert len(set(names)) == len(names)
    # `go build -o dir` names binaries after the package directory: those must not collide either.
    dirs = [Path(d).name for d in mb.CILIUM_AGENT_CMDS]
    assert len(set(dirs)) == len(dirs)
    for needed in ("cilium-agent", "cilium-dbg", "cilium-health", "cilium-health-responder", "cilium-mount"):
        assert needed in names
    assert "ipam_provider_operator" in mb.CILIUM_OPERATOR_TAGS


def test_iptables_wrapper_install_covers_both_families() -> None:
    cmd = mb.iptables_wrapper_install()
    for family in ("iptables", "ip6tables"):
        assert f"--install /usr/sbin/{family} {family} /usr/sbin/iptables-wrapper 100" in cmd
        for op in ("save", "restore"):
            assert f"--slave /usr/sbin/{family}-{op} {family}-{op} /usr/sbin/iptables-wrapper" in cmd
        assert f"update-alternatives --set {family} /usr/sbin/iptables-wrapper" in cmd


def test_iptables_wrapper_is_valid_posix_sh(tmp_path: Path) -> None:
    script = tmp_path / "iptables-wrapper"
    script.write_text(mb.IPTABLES_WRAPPER)
    assert mb.IPTABLES_WRAPPER.startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_datapath_images_are_what_mirror_server_pushes() -> None:
    # lab/mirror_server.py pushes mirror/images/*.tar (not recursive) into the lab registry.
    assert 'glob("*.tar")' in (REPO / "lab/mirror_server.py").read_text()
    assert mb.DATAPATH_IMAGES_SUBDIR == ""
    recipes = {a.name: a.recipe for a in mb.artifacts(mb.read_pins(), "go1.26.8") if a.group == "datapath"}
    assert all(r["images"] == "images/" for r in recipes.values())
