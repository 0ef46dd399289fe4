# Table-driven tests of the homelab.bootstrap filters.
from __future__ import annotations

import pytest

from ansible_collections.homelab.bootstrap.plugins.filter.homelab import duplicates, listening_ports, port_conflicts

SS = """LISTEN 0 4096 *:6443 *:* users:(("kube-apiserver",pid=812,fd=3))
LISTEN 0 4096 127.0.0.1:2379 0.0.0.0:* users:(("etcd",pid=700,fd=7))
LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=1,fd=3),("sshd",pid=2,fd=3))
LISTEN 0 128 [::]:10250 [::]:* users:(("nginx",pid=9,fd=6))
LISTEN 0 128 192.168.1.5%eth0:8443 0.0.0.0:*
"""


def test_listening_ports_parses_ipv4_ipv6_and_processes() -> None:
    ports = listening_ports(SS)
    assert ports[6443] == ["kube-apiserver"]
    assert ports[22] == ["sshd"]
    assert ports[10250] == ["nginx"]
    assert ports[8443] == []


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ([{"port": 6443, "owners": ["kube-apiserver"]}], []),
        ([{"port": "2379", "owners": ["etcd"]}], []),
        ([{"port": 10250, "owners": ["kubelet"]}], ["port 10250 is in use by nginx"]),
        ([{"port": 8443, "owners": ["haproxy"]}], ["port 8443 is in use by an unknown process"]),
        ([{"port": 2380, "owners": ["etcd"]}], []),
    ],
)
def test_port_conflicts(wanted: list[dict], expected: list[str]) -> None:
    assert port_conflicts(SS, wanted) == expected


def test_duplicates() -> None:
    assert duplicates({"a": "x", "b": "y", "c": "x", "d": ""}) == {"x": ["a", "c"]}
    assert duplicates({"a": "x"}) == {}
