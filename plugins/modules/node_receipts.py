# Module: receipts of converged roles on a node, checked in one call so converged roles can be skipped.
"""Record what a role left on a node after it converged, and check later whether that still holds."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from collections.abc import Callable, Iterable
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: node_receipts
short_description: Record and check the receipts of converged roles (the fast path of a rerun)
description:
  - A receipt is a JSON file per role in O(dir), written after the role converged on the node. It
    holds the fingerprint of the role's inputs (its own files and the values of the variables it reads,
    computed on the controller by the action plugin of the same name) and what the role manages (the
    owner, mode and sha256 of every file, paths that must exist or must not, systemd units that must be
    active, enabled or masked, running kernel parameters, installed packages, swap off, the host name,
    and the facts the role exports).
  - With O(check), one call looks at the receipts of several roles and reports which still hold (the
    fingerprint is the same and every recorded item is still as recorded). A file whose size, mtime,
    ctime and inode are unchanged is taken as unchanged without reading it (as git does for its index);
    any other file is hashed again. The facts of the receipts that hold are returned as facts.
  - With O(record), it writes the receipt of one role, after checking that everything the role is to
    guarantee holds right now; if not, it removes that role's receipt and says why (so the next run
    converges the role fully again).
  - Use it through the roles of this collection; the action plugin adds the fingerprints.
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  dir:
    description: Directory of the receipts, one C(<role>.json) each.
    type: path
    default: /var/lib/homelab-bootstrap
  check:
    description: Role name to fingerprint (added by the action plugin) for each receipt to check.
    type: dict
  record:
    description: Name of the role whose receipt is written. Mutually exclusive with O(check).
    type: str
  fingerprint:
    description: Fingerprint of O(record) (added by the action plugin).
    type: dict
  files:
    description: Files and directories the role manages; their type, owner, mode and (files) sha256 are recorded.
    type: list
    elements: path
    default: []
  copies:
    description:
      - Directories whose regular files the role installed elsewhere, as C(src) (the unpacked release) and
        C(dest) (where each of them was installed). Each C(dest/<name>) is recorded like O(files).
    type: list
    elements: dict
    default: []
  exists:
    description: Paths that must exist (for example a kernel module's C(/sys/module/<name>)).
    type: list
    elements: path
    default: []
  absent:
    description: Paths that must not exist.
    type: list
    elements: path
    default: []
  units:
    description: systemd unit name to the states it must be in, any of C(active), C(enabled), C(masked) (bool each).
    type: dict
    default: {}
  sysctls:
    description: Kernel parameter to its running value.
    type: dict
    default: {}
  packages:
    description: Distribution packages that must be installed (dpkg or pacman, whichever the node has).
    type: list
    elements: str
    default: []
  swap_off:
    description: No swap area may be active.
    type: bool
    default: false
  hostname:
    description: The host name the node must have (empty for any).
    type: str
    default: ""
  facts:
    description: Facts the role exports; returned by O(check) while the receipt holds.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Check the receipts of the node preparation roles at once
  homelab.bootstrap.node_receipts:
    check: [node_os, containerd, kubernetes_binaries]
  register: homelab_node_receipts

- name: Record what containerd manages
  homelab.bootstrap.node_receipts:
    record: containerd
    files: [/etc/containerd/config.toml, /usr/local/sbin/runc]
    copies:
      - {src: /opt/homelab/downloads/containerd-2.2.0-linux-amd64/bin, dest: /usr/local/bin}
    units:
      containerd.service: {active: true, enabled: true}
"""

RETURN = r"""
checked:
  description: The roles whose receipts were checked (O(check)).
  returned: check
  type: list
  elements: str
valid:
  description: The roles whose receipts still hold; they need not run.
  returned: check
  type: list
  elements: str
  sample: [node_os, kubernetes_binaries]
stale:
  description: For every other checked role, why its receipt does not hold.
  returned: check
  type: dict
  sample: {containerd: ["/etc/containerd/config.toml: content changed", "containerd.service: not active"]}
holds:
  description: Whether everything the role guarantees held when it was to be recorded (O(record)).
  returned: record
  type: bool
reasons:
  description: What did not hold, when O(holds) is false (the receipt was then removed).
  returned: record
  type: list
  elements: str
receipt:
  description: Path of the receipt file.
  returned: record
  type: str
"""

FORMAT = 1
# UnitFileState values for which `systemctl is-enabled` succeeds (what "enabled: true" ensures).
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "indirect", "generated", "transient"})
ACTIVE_STATES = frozenset({"active", "activating", "reloading"})
PROC_SYS = "/proc/sys"
PROC_SWAPS = "/proc/swaps"
DPKG_QUERY = "/usr/bin/dpkg-query"
# The stat fields that change whenever a file's content does (ctime cannot be set from user space).
STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "ino")

Runner = Callable[[list[str]], tuple[int, str, str]]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: str) -> dict[str, Any] | None:
    """What a receipt records of one path: type, owner, mode and, for a regular file, stat and sha256."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    entry: dict[str, Any] = {"mode": f"{stat.S_IMODE(info.st_mode):04o}", "uid": info.st_uid, "gid": info.st_gid}
    if stat.S_ISDIR(info.st_mode):
        return {"type": "directory", **entry}
    if not stat.S_ISREG(info.st_mode):
        return {"type": "other", **entry}
    stats = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "ino": info.st_ino}
    return {"type": "file", **entry, **stats, "sha256": sha256_file(path)}


def file_drift(path: str, recorded: dict[str, Any]) -> str | None:
    """Why path is no longer as recorded, or None. Unchanged stat fields spare reading the file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return f"{path}: missing"
    kind = "directory" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "other"
    mode = f"{stat.S_IMODE(info.st_mode):04o}"
    reason = None
    if kind != recorded.get("type"):
        reason = f"{path}: is a {kind}, recorded a {recorded.get('type')}"
    elif (mode, info.st_uid, info.st_gid) != (recorded.get("mode"), recorded.get("uid"), recorded.get("gid")):
        reason = f"{path}: owner or mode changed ({info.st_uid}:{info.st_gid} {mode})"
    elif kind == "file" and not content_unchanged(path, info, recorded):
        reason = f"{path}: content changed"
    return reason


def content_unchanged(path: str, info: os.stat_result, recorded: dict[str, Any]) -> bool:
    current = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    if current == tuple(recorded.get(key) for key in STAT_KEYS):
        return True
    return info.st_size == recorded.get("size") and sha256_file(path) == recorded.get("sha256")


def copied_files(copies: Iterable[dict[str, Any]]) -> list[str]:
    """dest/<name> for every regular file in each copy's src directory."""
    paths: list[str] = []
    for copy in copies:
        src, dest = copy["src"], copy["dest"]
        names = sorted(name for name in os.listdir(src) if os.path.isfile(os.path.join(src, name)))
        paths.extend(os.path.join(dest, name) for name in names)
    return paths


class Probe:
    """Asks systemd and the package database about many units and packages in one command each."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.units: dict[str, dict[str, str]] = {}
        self.installed: dict[str, bool] = {}

    def prefetch(self, receipts: Iterable[dict[str, Any]]) -> None:
        receipts = list(receipts)
        self.unit_states(name for receipt in receipts for name in receipt.get("units", {}))
        self.missing_packages(name for receipt in receipts for name in receipt.get("packages", []))

    def unit_states(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """LoadState, ActiveState and UnitFileState of each unit, from one `systemctl show`."""
        names = sorted(set(names))
        wanted = [name for name in names if name not in self.units]
        if wanted:
            argv = ["systemctl", "show", "--property=Id,LoadState,ActiveState,UnitFileState", "--", *wanted]
            rc, out, err = self.run(argv)
            if rc != 0:
                raise RuntimeError(f"systemctl show failed: {err.strip()}")
            blocks = [dict(line.split("=", 1) for line in b.splitlines() if "=" in line) for b in out.split("\n\n")]
            # One block per unit, in the order asked (Id may name an alias's target instead).
            self.units.update(zip(wanted, [block for block in blocks if block], strict=False))
        return {name: self.units.get(name, {}) for name in names}

    def missing_packages(self, names: Iterable[str]) -> list[str]:
        """The packages of names that are not installed, asking dpkg or pacman once."""
        names = sorted(set(names))
        wanted = [name for name in names if name not in self.installed]
        if wanted:
            self.installed.update(dict.fromkeys(wanted, False))
            if os.path.exists(DPKG_QUERY):
                fmt = "--showformat=${db:Status-Abbrev} ${Package}\\n"
                _, out, _ = self.run(["dpkg-query", "--show", fmt, "--", *wanted])
                found = {line.split()[-1].split(":")[0] for line in out.splitlines() if line.startswith("ii ")}
            else:
                _, out, _ = self.run(["pacman", "--query", "--", *wanted])
                found = {line.split()[0] for line in out.splitlines() if line.strip()}
            self.installed.update({name: True for name in wanted if name in found})
        return [name for name in names if not self.installed[name]]


def unit_drift(name: str, want: dict[str, bool], state: dict[str, str]) -> list[str]:
    reasons = []
    masked = state.get("LoadState") == "masked" or state.get("UnitFileState", "").startswith("masked")
    checks = {
        "active": state.get("ActiveState", "") in ACTIVE_STATES,
        "enabled": state.get("UnitFileState", "") in ENABLED_STATES,
        "masked": masked,
    }
    for key, expected in sorted(want.items()):
        if key in checks and checks[key] != bool(expected):
            reasons.append(f"{name}: {'not ' if expected else ''}{key}")
    return reasons


def sysctl_value(name: str) -> str | None:
    try:
        with open(os.path.join(PROC_SYS, *name.split(".")), encoding="utf-8") as handle:
            return " ".join(handle.read().split())
    except OSError:
        return None


def sysctl_drift(wanted: dict[str, Any]) -> list[str]:
    reasons = []
    for name, value in sorted(wanted.items()):
        current = sysctl_value(name)
        if current != " ".join(str(value).split()):
            reasons.append(f"{name} is {current}, recorded {value}")
    return reasons


def swap_active() -> bool:
    with open(PROC_SWAPS, encoding="utf-8") as handle:
        return len(handle.read().strip().splitlines()) > 1


def live_drift(receipt: dict[str, Any], probe: Probe) -> list[str]:
    """Everything in a receipt (but its files and fingerprint) that no longer holds on the node."""
    reasons = [f"{path}: missing" for path in receipt.get("exists", []) if not os.path.exists(path)]
    reasons += [f"{path}: exists" for path in receipt.get("absent", []) if os.path.lexists(path)]
    units = receipt.get("units", {})
    states = probe.unit_states(units)
    for name, want in sorted(units.items()):
        reasons += unit_drift(name, want, states[name])
    reasons += sysctl_drift(receipt.get("sysctls", {}))
    missing = probe.missing_packages(receipt.get("packages", []))
    if missing:
        reasons.append(f"packages not installed: {', '.join(missing)}")
    if receipt.get("swap_off") and swap_active():
        reasons.append("swap is on")
    hostname = receipt.get("hostname") or ""
    if hostname and socket.gethostname() != hostname:
        reasons.append(f"host name is {socket.gethostname()}, recorded {hostname}")
    return reasons


def fingerprint_drift(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Which part of the fingerprint (the role's files, each input) changed since the receipt."""
    if recorded == current:
        return []
    reasons = []
    if recorded.get("role_files") != current.get("role_files"):
        reasons.append("the role's files changed")
    old, new = recorded.get("inputs", {}), current.get("inputs", {})
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    if changed:
        reasons.append(f"inputs changed: {', '.join(changed)}")
    return reasons or ["fingerprint changed"]


def read_receipt(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def receipt_drift(receipt: dict[str, Any] | None, fingerprint: dict[str, Any], probe: Probe) -> list[str]:
    """Why a receipt does not hold (empty: it holds). Cheap checks first; the first failing kind stops."""
    if receipt is None:
        return ["no receipt (never converged here, or an older format)"]
    reasons = fingerprint_drift(receipt.get("fingerprint", {}), fingerprint)
    if reasons:
        return reasons
    reasons = live_drift(receipt, probe)
    for path, entry in sorted(receipt.get("files", {}).items()):
        reason = file_drift(path, entry)
        if reason:
            reasons.append(reason)
    return reasons


def check(params: dict[str, Any], run: Runner) -> dict[str, Any]:
    valid: list[str] = []
    stale: dict[str, list[str]] = {}
    facts: dict[str, Any] = {}
    wanted = params["check"] or {}
    receipts = {role: read_receipt(os.path.join(params["dir"], f"{role}.json")) for role in wanted}
    probe = Probe(run)
    probe.prefetch(r for role, r in receipts.items() if r and r.get("fingerprint") == wanted[role])
    for role, fingerprint in sorted(wanted.items()):
        receipt = receipts[role]
        reasons = receipt_drift(receipt, fingerprint or {}, probe)
        if reasons:
            stale[role] = reasons
        else:
            valid.append(role)
            facts.update(receipt.get("facts", {}) if receipt else {})
    return {"changed": False, "checked": sorted(wanted), "valid": valid, "stale": stale, "ansible_facts": facts}


def build_receipt(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The receipt of params['record'] as the node is now, and the paths that should exist but do not."""
    paths = sorted(set(params["files"]) | set(copied_files(params["copies"])))
    entries = {path: file_entry(path) for path in paths}
    receipt = {
        "format": FORMAT,
        "role": params["record"],
        "fingerprint": params["fingerprint"] or {},
        "files": {path: entry for path, entry in entries.items() if entry is not None},
        "exists": sorted(params["exists"]),
        "absent": sorted(params["absent"]),
        "units": params["units"],
        "sysctls": {name: str(value) for name, value in params["sysctls"].items()},
        "packages": sorted(set(params["packages"])),
        "swap_off": params["swap_off"],
        "hostname": params["hostname"],
        "facts": params["facts"],
    }
    return receipt, [f"{path}: missing" for path, entry in entries.items() if entry is None]


def record(module: AnsibleModule, run: Runner) -> dict[str, Any]:
    params = module.params
    path = os.path.join(params["dir"], f"{params['record']}.json")
    receipt, reasons = build_receipt(params)
    reasons += live_drift(receipt, Probe(run))
    old = read_receipt(path)
    if reasons:
        # What the role is to guarantee does not hold: the next run must converge it fully.
        if old is not None and not module.check_mode:
            os.unlink(path)
        module.warn(f"not recording {params['record']}: {'; '.join(reasons)}")
        return {"changed": old is not None, "holds": False, "reasons": reasons, "receipt": path}
    changed = old != receipt
    if changed and not module.check_mode:
        write_json(module, path, receipt)
    return {"changed": changed, "holds": True, "reasons": [], "receipt": path}


def write_json(module: AnsibleModule, path: str, data: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "default": "/var/lib/homelab-bootstrap"},
            "check": {"type": "dict"},
            "record": {"type": "str"},
            "fingerprint": {"type": "dict"},
            "files": {"type": "list", "elements": "path", "default": []},
            "copies": {"type": "list", "elements": "dict", "default": []},
            "exists": {"type": "list", "elements": "path", "default": []},
            "absent": {"type": "list", "elements": "path", "default": []},
            "units": {"type": "dict", "default": {}},
            "sysctls": {"type": "dict", "default": {}},
            "packages": {"type": "list", "elements": "str", "default": []},
            "swap_off": {"type": "bool", "default": False},
            "hostname": {"type": "str", "default": ""},
            "facts": {"type": "dict", "default": {}},
        },
        mutually_exclusive=[("check", "record")],
        required_one_of=[("check", "record")],
        supports_check_mode=True,
    )

    def run(argv: list[str]) -> tuple[int, str, str]:
        return module.run_command(argv, environ_update={"LC_ALL": "C", "SYSTEMD_PAGER": ""})

    try:
        result = check(module.params, run) if module.params["check"] is not None else record(module, run)
    except (OSError, RuntimeError) as exc:
        module.fail_json(msg=f"node_receipts: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
