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
