# Filters for checks that Jinja expresses badly: duplicate detection and port ownership.
"""Jinja filters of the homelab.bootstrap collection."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.homelab.bootstrap.plugins.module_utils.inventory_validation import node_address

_USERS_RE = re.compile(r'\("([^"]+)",pid=\d+')


def duplicates(values: Mapping[str, Any]) -> dict[str, list[str]]:
    """Map each value held by more than one key to those keys: {host: uuid} -> {uuid: [hosts]}."""
    owners: dict[str, list[str]] = {}
    for key, value in values.items():
        if value in (None, ""):
            continue
        owners.setdefault(str(value), []).append(str(key))
    return {value: sorted(keys) for value, keys in owners.items() if len(keys) > 1}


def listening_ports(ss_output: str) -> dict[int, list[str]]:
    """Parse `ss -Htlnp` into {port: [process names]} (names empty when ss cannot tell)."""
    ports: dict[int, list[str]] = {}
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        port_text = local.rsplit(":", 1)[-1]
        if not port_text.isdigit():
            continue
        names = _USERS_RE.findall(line)
        ports.setdefault(int(port_text), []).extend(n for n in names if n not in ports.get(int(port_text), []))
    return ports


def port_conflicts(ss_output: str, wanted: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ports from `wanted` ({port, owners}) held by a process that is not one of its owners."""
    held = listening_ports(ss_output)
    problems = []
    for item in wanted:
        port = int(item["port"])
        allowed = set(item.get("owners", []))
        if port not in held:
            continue
        others = [name for name in held[port] if name not in allowed]
        if others or not held[port]:
            who = ", ".join(others) if others else "an unknown process"
            problems.append(f"port {port} is in use by {who}")
    return problems


def node_addresses(hosts: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Cluster addresses of `hosts` in order (node_ip, else ansible_host, else the name)."""
    return [node_address(host, hostvars[host]) for host in hosts]


class FilterModule:
    """homelab.bootstrap filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "duplicates": duplicates,
            "node_addresses": node_addresses,
            "port_conflicts": port_conflicts,
        }
