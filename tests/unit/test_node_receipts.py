# Table-driven tests of the node_receipts module: record a converged node, drift it, check the receipt.
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.homelab.bootstrap.plugins.modules import node_receipts

FINGERPRINT = {"role_files": "f1", "inputs": {"containerd_config": "c1", "image_registries": "r1"}}


@dataclass
class Node:
    """A fake node under a temporary root: files, systemd units, kernel parameters, packages, swap."""

    root: Path
    units: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    swaps: list[str] = field(default_factory=list)
    hostname: str = "node1"
    calls: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def path(self, rel: str) -> str:
        return str(self.root / rel)

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        """What systemctl show, dpkg-query and pacman answer on this node."""
        self.calls.append(argv)
        names = argv[argv.index("--") + 1 :]
        if argv[:2] == ["systemctl", "show"]:
            blocks = []
            for name in names:
                load, active, file_state = self.units.get(name, ("not-found", "inactive", ""))
                blocks.append(f"Id={name}\nLoadState={load}\nActiveState={active}\nUnitFileState={file_state}\n")
            return 0, "\n".join(blocks), ""
        if argv[0] == "dpkg-query":
            found = sorted(n for n in names if n in self.packages)
            missing = [n for n in names if n not in self.packages]
            return (1 if missing else 0), "".join(f"ii  {n}\n" for n in found), ""
        if argv[0] == "pacman":
            return 0, "".join(f"{n} 1.0-1\n" for n in sorted(set(names) & self.packages)), ""
        raise AssertionError(f"unexpected command {argv}")

    def sync(self) -> None:
        """Write the kernel parameters and swaps where the module reads them."""
        for name, value in self.sysctls.items():
            path = self.root / "proc/sys" / name.replace(".", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
        (self.root / "proc/swaps").write_text(
            "Filename\tType\tSize\tUsed\tPriority\n" + "".join(s + "\n" for s in self.swaps)
        )


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A converged node: what the record spec below says, as it says."""
    node = Node(
        tmp_path,
        units={
            "app.service": ("loaded", "active", "enabled"),
            "kubelet.service": ("loaded", "inactive", "enabled"),
            "zram.swap": ("masked", "inactive", "masked"),
        },
        sysctls={"net.ipv4.ip_forward": "1", "net.ipv4.ip_local_port_range": "1024\t65000"},
        packages={"socat", "conntrack"},
    )
    files = {"etc/app.conf": ("a=1\n", 0o644), "usr/bin/tool": ("binary", 0o755), "release/bin/tool2": ("two", 0o755)}
    for rel, (content, mode) in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    (tmp_path / "usr/bin/tool2").write_text("two")
    (tmp_path / "usr/bin/tool2").chmod(0o755)
    (tmp_path / "etc/app.d").mkdir()
    (tmp_path / "sys/module/overlay").mkdir(parents=True)
    (tmp_path / "dpkg-query").write_text("")
    node.sync()
    monkeypatch.setattr(node_receipts, "PROC_SYS", str(tmp_path / "proc/sys"))
    monkeypatch.setattr(node_receipts, "PROC_SWAPS", str(tmp_path / "proc/swaps"))
    monkeypatch.setattr(node_receipts, "DPKG_QUERY", str(tmp_path / "dpkg-query"))
    monkeypatch.setattr(node_receipts.socket, "gethostname", lambda: node.hostname)
    monkeypatch.setattr(AnsibleModule, "run_command", lambda self, argv, **kwargs: node.run(argv))
    # Where a module's warnings go depends on what else the test process loaded: catch them here.
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, warning: node.warnings.append(warning))
    return node


def record_args(node: Node, **overrides: Any) -> dict[str, Any]:
    args = {
        "dir": node.path("var/lib/homelab-bootstrap"),
        "record": "containerd",
        "fingerprint": FINGERPRINT,
        "files": [node.path("etc/app.conf"), node.path("usr/bin/tool"), node.path("etc/app.d")],
        "copies": [{"src": node.path("release/bin"), "dest": node.path("usr/bin")}],
        "exists": [node.path("sys/module/overlay")],
        "absent": [node.path("etc/old.conf")],
        "units": {
            "app.service": {"active": True, "enabled": True},
            "kubelet.service": {"enabled": True},
            "zram.swap": {"masked": True},
        },
        "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.ip_local_port_range": "1024 65000"},
        "packages": ["socat", "conntrack"],
        "swap_off": True,
        "hostname": "node1",
        "facts": {"kubelet_resolv_conf": "/run/systemd/resolve/resolv.conf"},
    }
    return {**args, **overrides}


def run_module(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the module's main() as Ansible would and return its JSON result."""
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        node_receipts.main()
    result = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 0, result
    return result


def check(node: Node, capsys: pytest.CaptureFixture[str], fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    args = {"dir": node.path("var/lib/homelab-bootstrap"), "check": {"containerd": fingerprint or FINGERPRINT}}
    return run_module(args, capsys)


def write(rel: str, content: str) -> Callable[[Node], None]:
    return lambda node: Path(node.path(rel)).write_text(content)


def same_size_other_content(rel: str) -> Callable[[Node], None]:
    """Different content of the same size, with the old mtime put back: only the ctime and the sha256 tell."""

    def drift(node: Node) -> None:
        path = Path(node.path(rel))
        info = path.stat()
        path.write_text("a=2\n")
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))

    return drift


def rewrite(rel: str) -> Callable[[Node], None]:
    """The same content written again: new mtime and ctime, same sha256."""
    return lambda node: Path(node.path(rel)).write_text(Path(node.path(rel)).read_text())


def chmod(rel: str, mode: int) -> Callable[[Node], None]:
    return lambda node: Path(node.path(rel)).chmod(mode)


def remove(rel: str) -> Callable[[Node], None]:
    return lambda node: Path(node.path(rel)).unlink()


def replace_by_dir(rel: str) -> Callable[[Node], None]:
    def drift(node: Node) -> None:
        Path(node.path(rel)).unlink()
        Path(node.path(rel)).mkdir()

    return drift


def unit(name: str, state: tuple[str, str, str]) -> Callable[[Node], None]:
    return lambda node: node.units.__setitem__(name, state)


def sysctl(name: str, value: str) -> Callable[[Node], None]:
    def drift(node: Node) -> None:
        node.sysctls[name] = value
        node.sync()

    return drift


def swap_on(node: Node) -> None:
    node.swaps.append("/swapfile\tfile\t1048572\t0\t-2")
    node.sync()


def uninstall(name: str) -> Callable[[Node], None]:
    return lambda node: node.packages.discard(name)


def rename(node: Node) -> None:
    node.hostname = "other"


def rmdir(rel: str) -> Callable[[Node], None]:
    return lambda node: Path(node.path(rel)).rmdir()


def create(rel: str) -> Callable[[Node], None]:
    return write(rel, "stale")


# Each case: what happens to the converged node after its receipt was recorded, and why the receipt
# must then no longer hold ({root} is the node's root). No reasons: the receipt still holds.
CASES: list[dict[str, Any]] = [
    {"id": "nothing changed", "drift": [], "reasons": []},
    {"id": "a managed file is rewritten with the same content", "drift": [rewrite("etc/app.conf")], "reasons": []},
    {
        "id": "a managed file's content changed",
        "drift": [write("etc/app.conf", "a=1\nb=2\n")],
        "reasons": ["{root}/etc/app.conf: content changed"],
    },
    {
        "id": "same size, other content, mtime put back",
        "drift": [same_size_other_content("etc/app.conf")],
        "reasons": ["{root}/etc/app.conf: content changed"],
    },
    {
        "id": "a binary's mode changed",
        "drift": [chmod("usr/bin/tool", 0o700)],
        "reasons": ["{root}/usr/bin/tool: owner or mode changed ({uid}:{gid} 0700)"],
    },
    {
        "id": "a managed file was removed",
        "drift": [remove("usr/bin/tool")],
        "reasons": ["{root}/usr/bin/tool: missing"],
    },
    {
        "id": "a managed file became a directory",
        "drift": [replace_by_dir("etc/app.conf")],
        "reasons": ["{root}/etc/app.conf: is a directory, recorded a file"],
    },
    {
        "id": "an installed copy of a release file changed",
        "drift": [write("usr/bin/tool2", "patched")],
        "reasons": ["{root}/usr/bin/tool2: content changed"],
    },
    {
        "id": "a path that must exist is gone",
        "drift": [rmdir("sys/module/overlay")],
        "reasons": ["{root}/sys/module/overlay: missing"],
    },
    {
        "id": "a path that must be absent appeared",
        "drift": [create("etc/old.conf")],
        "reasons": ["{root}/etc/old.conf: exists"],
    },
    {
        "id": "a service was stopped",
        "drift": [unit("app.service", ("loaded", "inactive", "enabled"))],
        "reasons": ["app.service: not active"],
    },
    {
        "id": "a service was disabled and a swap unit unmasked",
        "drift": [
            unit("kubelet.service", ("loaded", "inactive", "disabled")),
            unit("zram.swap", ("loaded", "inactive", "")),
        ],
        "reasons": ["kubelet.service: not enabled", "zram.swap: not masked"],
    },
    {
        "id": "a service not meant to run is starting: still holds",
        "drift": [unit("kubelet.service", ("loaded", "activating", "enabled"))],
        "reasons": [],
    },
    {
        "id": "a kernel parameter changed",
        "drift": [sysctl("net.ipv4.ip_forward", "0")],
        "reasons": ["net.ipv4.ip_forward is 0, recorded 1"],
    },
    {
        "id": "a multi-value kernel parameter changed",
        "drift": [sysctl("net.ipv4.ip_local_port_range", "32768\t60999")],
        "reasons": ["net.ipv4.ip_local_port_range is 32768 60999, recorded 1024 65000"],
    },
    {"id": "a package was removed", "drift": [uninstall("socat")], "reasons": ["packages not installed: socat"]},
    {"id": "swap was turned on", "drift": [swap_on], "reasons": ["swap is on"]},
    {"id": "the host name changed", "drift": [rename], "reasons": ["host name is other, recorded node1"]},
    {
        "id": "several things at once",
        "drift": [unit("app.service", ("loaded", "failed", "enabled")), write("etc/app.conf", "x")],
        "reasons": ["app.service: not active", "{root}/etc/app.conf: content changed"],
    },
]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_drift(case: dict[str, Any], node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = run_module(record_args(node), capsys)
    assert (recorded["changed"], recorded["holds"]) == (True, True)
    for drift in case["drift"]:
        drift(node)
    result = check(node, capsys)
    expected = [r.format(root=node.root, uid=os.getuid(), gid=os.getgid()) for r in case["reasons"]]
    assert result["changed"] is False
    assert result["checked"] == ["containerd"]
    if expected:
        assert (result["valid"], result["stale"]) == ([], {"containerd": expected})
        assert result["ansible_facts"] == {}
    else:
        assert (result["valid"], result["stale"]) == (["containerd"], {})
        assert result["ansible_facts"] == {"kubelet_resolv_conf": "/run/systemd/resolve/resolv.conf"}


# Each case: the fingerprint the next run computes, and the reasons the receipt then does not hold.
FINGERPRINT_CASES: list[dict[str, Any]] = [
    {"id": "same role and inputs", "fingerprint": FINGERPRINT, "reasons": []},
    {
        "id": "the role's files changed",
        "fingerprint": {**FINGERPRINT, "role_files": "f2"},
        "reasons": ["the role's files changed"],
    },
    {
        "id": "an input changed",
        "fingerprint": {**FINGERPRINT, "inputs": {"containerd_config": "c2", "image_registries": "r1"}},
        "reasons": ["inputs changed: containerd_config"],
    },
    {
        "id": "an input was added and the files changed",
        "fingerprint": {"role_files": "f2", "inputs": {**FINGERPRINT["inputs"], "image_mirror_url": "m"}},
        "reasons": ["the role's files changed", "inputs changed: image_mirror_url"],
    },
]


@pytest.mark.parametrize("case", FINGERPRINT_CASES, ids=[c["id"] for c in FINGERPRINT_CASES])
def test_fingerprint(case: dict[str, Any], node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    run_module(record_args(node), capsys)
    result = check(node, capsys, case["fingerprint"])
    assert result["stale"] == ({"containerd": case["reasons"]} if case["reasons"] else {})


def test_a_changed_fingerprint_spares_the_node_probes(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    run_module(record_args(node), capsys)
    node.calls.clear()
    check(node, capsys, {**FINGERPRINT, "role_files": "f2"})
    assert node.calls == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no receipt (never converged here, or an older format)"),
        ('{"format": 0, "role": "containerd"}', "no receipt (never converged here, or an older format)"),
        ("not json", "no receipt (never converged here, or an older format)"),
    ],
    ids=["missing", "older format", "unreadable"],
)
def test_no_usable_receipt(content: str | None, reason: str, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    if content is not None:
        Path(node.path("var/lib/homelab-bootstrap")).mkdir(parents=True)
        Path(node.path("var/lib/homelab-bootstrap/containerd.json")).write_text(content)
    assert check(node, capsys)["stale"] == {"containerd": [reason]}


def test_one_call_checks_several_roles_with_one_query_each(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    run_module(record_args(node), capsys)
    other = record_args(node, record="node_os", units={"other.service": {"active": True}}, facts={"other": 1})
    node.units["other.service"] = ("loaded", "active", "enabled")
    run_module(other, capsys)
    node.units["other.service"] = ("loaded", "failed", "enabled")
    node.calls.clear()
    fingerprints = {"containerd": FINGERPRINT, "node_os": FINGERPRINT, "kubeadm": FINGERPRINT}
    result = run_module({"dir": node.path("var/lib/homelab-bootstrap"), "check": fingerprints}, capsys)
    assert result["checked"] == ["containerd", "kubeadm", "node_os"]
    assert result["valid"] == ["containerd"]
    assert result["stale"] == {
        "kubeadm": ["no receipt (never converged here, or an older format)"],
        "node_os": ["other.service: not active"],
    }
    assert result["ansible_facts"] == {"kubelet_resolv_conf": "/run/systemd/resolve/resolv.conf"}
    assert [argv[0] for argv in node.calls] == ["systemctl", "dpkg-query"]


def test_recording_again_without_changes_changes_nothing(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_module(record_args(node), capsys)["changed"] is True
    assert run_module(record_args(node), capsys)["changed"] is False


def test_receipt_content(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(record_args(node), capsys)
    receipt = json.loads(Path(result["receipt"]).read_text())
    assert receipt["role"] == "containerd"
    assert receipt["fingerprint"] == FINGERPRINT
    assert sorted(receipt["files"]) == sorted(
        node.path(p) for p in ("etc/app.conf", "usr/bin/tool", "usr/bin/tool2", "etc/app.d")
    )
    assert receipt["files"][node.path("etc/app.d")]["type"] == "directory"
    tool = receipt["files"][node.path("usr/bin/tool")]
    assert (tool["mode"], tool["size"], tool["sha256"]) == (
        "0755",
        6,
        "9a3a45d01531a20e89ac6ae10b0b0beb0492acd7216a368aa062d1a5fecaf9cd",
    )
    assert receipt["sysctls"] == {"net.ipv4.ip_forward": "1", "net.ipv4.ip_local_port_range": "1024 65000"}
    assert oct(Path(result["receipt"]).stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    ("drift", "reason"),
    [
        (unit("app.service", ("loaded", "inactive", "enabled")), "app.service: not active"),
        (remove("etc/app.conf"), "{root}/etc/app.conf: missing"),
        (sysctl("net.ipv4.ip_forward", "0"), "net.ipv4.ip_forward is 0, recorded 1"),
    ],
    ids=["service down", "file missing", "kernel parameter"],
)
def test_nothing_is_recorded_that_does_not_hold_now(
    drift: Callable[[Node], None], reason: str, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    """A role whose guarantees do not hold at its end gets no receipt, and loses its old one."""
    first = run_module(record_args(node), capsys)
    drift(node)
    result = run_module(record_args(node), capsys)
    assert (result["changed"], result["holds"]) == (True, False)
    assert result["reasons"] == [reason.format(root=node.root)]
    assert node.warnings == [f"not recording containerd: {result['reasons'][0]}"]
    assert not Path(first["receipt"]).exists()


def test_check_mode_records_nothing(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module({**record_args(node), "_ansible_check_mode": True}, capsys)
    assert (result["changed"], result["holds"]) == (True, True)
    assert not Path(result["receipt"]).exists()
    assert check(node, capsys)["valid"] == []


def test_pacman_nodes(node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_receipts, "DPKG_QUERY", node.path("no-dpkg-query"))
    run_module(record_args(node), capsys)
    node.packages.discard("conntrack")
    assert check(node, capsys)["stale"] == {"containerd": ["packages not installed: conntrack"]}
    assert node.calls[-1][:2] == ["pacman", "--query"]


def test_check_or_record_is_required(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    with patch_module_args({"dir": node.path("x")}), pytest.raises(SystemExit) as exit_info:
        node_receipts.main()
    assert exit_info.value.code == 1
    assert "one of the following is required" in json.loads(capsys.readouterr().out)["msg"]
