# lab/mirror_server.py: the settings it reads and the container it starts (no docker needed).
from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import REPO, load_script

# mirror_server imports its sibling node_images as the lab scripts do (run from lab/).
load_script("node_images", REPO / "lab" / "node_images.py")
ms = load_script("mirror_server", REPO / "lab" / "mirror_server.py")


def test_settings_come_from_node_container_yml() -> None:
    settings = ms.Settings.load()
    assert settings.mirror_ipv4_address == "172.30.0.2"
    assert (settings.mirror_http_port, settings.mirror_registry_port, settings.mirror_git_port) == (8080, 5000, 8081)


def test_the_lab_inventory_points_at_the_git_server() -> None:
    settings = ms.Settings.load()
    cluster = (REPO / "inventory/lab/group_vars/all/cluster.yml").read_text()
    assert f"gitops_repo_url: http://{settings.mirror_ipv4_address}:{settings.mirror_git_port}/cluster.git" in cluster
    assert "/lab/git-server/password" in cluster


def test_git_server_runs_beside_the_mirror_with_a_private_password(tmp_path: Path) -> None:
    args = ms.run_args(ms.Settings.load(), tmp_path)
    script = args[-1]
    assert f"{ms.GIT_SERVER_SCRIPT} --root {ms.GIT_ROOT} --password-file {ms.GIT_PASSWORD_PATH} --port 8081" in script
    assert "--repo cluster.git" in script
    password = tmp_path / "lab" / "git-server" / "password"
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    first = password.read_text()
    assert len(first.strip()) >= 24
    # The password is made once: later starts keep it (ArgoCD and the working copy rely on it).
    ms.run_args(ms.Settings.load(), tmp_path)
    assert password.read_text() == first
    # Neither the password nor its path leaks into the container's command line.
    assert first.strip() not in " ".join(args)


IP_ADDR = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
4: br-ea233a242c0f    inet 172.30.0.1/24 brd 172.30.0.255 scope global br-ea233a242c0f\\       valid_lft forever
5: br-43b10f206d22    inet 172.30.0.129/25 scope global br-43b10f206d22\\       valid_lft forever
"""


def test_subnet_holders_finds_every_interface_in_or_overlapping_the_subnet() -> None:
    assert ms.subnet_holders(IP_ADDR, "172.30.0.0/24") == ["br-ea233a242c0f", "br-43b10f206d22"]
    assert ms.subnet_holders(IP_ADDR, "10.99.0.0/24") == []


def test_only_bridges_of_vanished_docker_networks_are_stale() -> None:
    ids = ["43b10f206d22" + "0" * 52, "f00d" + "1" * 60]
    stale, others = ms.stale_bridges(["br-ea233a242c0f", "br-43b10f206d22", "eth1"], ids)
    assert stale == ["br-ea233a242c0f"]
    assert others == ["br-43b10f206d22", "eth1"]


def test_rules_naming_deletes_only_the_vanished_bridges_rules() -> None:
    listed = """-P POSTROUTING ACCEPT
-N DOCKER
-A POSTROUTING -s 172.30.0.0/24 ! -o br-ea233a242c0f -j MASQUERADE
-A POSTROUTING -s 172.30.0.0/24 ! -o br-1c5fd9c33d16 -j MASQUERADE
-A DOCKER -i br-ea233a242c0f -j RETURN
"""
    assert ms.rules_naming(listed, "br-ea233a242c0f") == [
        ["-D", "POSTROUTING", "-s", "172.30.0.0/24", "!", "-o", "br-ea233a242c0f", "-j", "MASQUERADE"],
        ["-D", "DOCKER", "-i", "br-ea233a242c0f", "-j", "RETURN"],
    ]
