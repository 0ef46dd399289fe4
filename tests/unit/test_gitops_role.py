# The gitops role as a user runs it: playbooks/gitops.yml against a real Git working copy.
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

PLAYBOOK = REPO / "playbooks" / "gitops.yml"
ANSIBLE = REPO / ".venv" / "bin" / "ansible-playbook"
# Only the parts of the tree that need no chart pin and no download: the role's behaviour
# (ownership, conflicts, commits, pushes) is the same for every file.
SMALL = {"homelab_components": {"pod_security": True}, "homelab_apps": {}}
POD_SECURITY = "cluster/platform/base/security/pod-security/kustomization.yaml"
NAMESPACES = "cluster/platform/base/namespaces/kustomization.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        recap = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)", self.out)
        self.changed = int(recap.group(2)) if recap else -1


@pytest.fixture
def run_role(inventory_from: Callable[[dict[str, Any]], Path], tmp_path: Path) -> Callable[..., Run]:
    def run(dest: Path, extra: dict[str, Any] | None = None, *flags: str) -> Run:
        settings = {**SMALL, "gitops_repo_local_path": str(dest), "gitops_push": False, **(extra or {})}
        inventory = tmp_path / f"inv-{len(list(tmp_path.glob('inv-*')))}"
        inventory_from({"vars": settings})
        (tmp_path / "inventory").rename(inventory)
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
        cmd = [str(ANSIBLE), str(PLAYBOOK), "-i", str(inventory), *flags]
        return Run(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False))

    return run


def test_first_run_commits_the_tree_and_the_second_changes_nothing(
    run_role: Callable[..., Run], tmp_path: Path
) -> None:
    dest = tmp_path / "gitops"
    first = run_role(dest)
    assert first.rc == 0, first.out
    assert first.changed == 1
    assert (dest / POD_SECURITY).is_file()
    tracked = git(dest, "ls-files").split()
    assert POD_SECURITY in tracked and ".homelab-bootstrap.json" in tracked
    assert git(dest, "status", "--porcelain") == ""
    message = git(dest, "log", "-1", "--format=%B")
    assert "added: " + POD_SECURITY in message
    second = run_role(dest)
    assert second.rc == 0, second.out
    assert second.changed == 0
    assert len(git(dest, "log", "--format=%H").split()) == 1


def test_an_edited_file_stops_the_run_and_nothing_is_written(run_role: Callable[..., Run], tmp_path: Path) -> None:
    dest = tmp_path / "gitops"
    assert run_role(dest).rc == 0
    edited = dest / NAMESPACES
    edited.write_text(edited.read_text() + "# my note\n")
    head = git(dest, "rev-parse", "HEAD")
    # Switching pod_security off would remove a file: it must not happen while the run fails.
    result = run_role(dest, {"homelab_components": {"pod_security": False}})
    assert result.rc != 0
    assert f"{NAMESPACES}: edited since homelab-bootstrap last wrote it" in result.out
    assert "# my note" in edited.read_text()
    assert (dest / POD_SECURITY).is_file()
    assert git(dest, "rev-parse", "HEAD") == head


def test_files_of_the_user_are_left_alone_and_never_committed(run_role: Callable[..., Run], tmp_path: Path) -> None:
    dest = tmp_path / "gitops"
    assert run_role(dest).rc == 0
    mine = dest / "cluster/apps/media/mine/kustomization.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("resources: []\n")
    theirs = run_role(dest, {"homelab_components": {"pod_security": False}})
    assert theirs.rc == 0, theirs.out
    assert mine.read_text() == "resources: []\n"
    assert "cluster/apps/media/mine/kustomization.yaml" not in git(dest, "ls-files")
    assert "?? cluster/apps/" in git(dest, "status", "--porcelain")
    # A file of the user at a path the tree wants is a conflict too, not an overwrite.
    (dest / POD_SECURITY).parent.mkdir(parents=True, exist_ok=True)
    (dest / POD_SECURITY).write_text("kind: Component\n")
    back_on = run_role(dest)
    assert back_on.rc != 0
    assert f"{POD_SECURITY}: exists but was not written by homelab-bootstrap" in back_on.out
    assert (dest / POD_SECURITY).read_text() == "kind: Component\n"


def test_switching_a_component_off_removes_its_files_in_a_commit(run_role: Callable[..., Run], tmp_path: Path) -> None:
    dest = tmp_path / "gitops"
    assert run_role(dest).rc == 0
    off = run_role(dest, {"homelab_components": {"pod_security": False}})
    assert off.rc == 0, off.out
    assert off.changed == 1
    assert not (dest / POD_SECURITY).exists()
    assert f"removed: {POD_SECURITY}" in git(dest, "log", "-1", "--format=%B")
    assert "components" not in yaml.safe_load((dest / NAMESPACES).read_text())
    owned = json.loads((dest / ".homelab-bootstrap.json").read_text())["files"]
    assert POD_SECURITY not in owned


def test_check_mode_reports_without_writing(run_role: Callable[..., Run], tmp_path: Path) -> None:
    dest = tmp_path / "gitops"
    check = run_role(dest, None, "--check", "--diff")
    assert check.rc == 0, check.out
    assert check.changed == 1
    assert not dest.exists()
    assert POD_SECURITY in check.out


def test_push_to_the_remote_and_clone_it_back(run_role: Callable[..., Run], tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--bare", "--quiet", "--initial-branch", "main", str(remote)], check=True)
    dest = tmp_path / "gitops"
    settings = {"gitops_repo_url": f"file://{remote}", "gitops_push": True}
    first = run_role(dest, settings)
    assert first.rc == 0, first.out
    assert git(remote, "rev-parse", "main") == git(dest, "rev-parse", "HEAD")
    again = run_role(dest, settings)
    assert again.rc == 0 and again.changed == 0, again.out
    clone = tmp_path / "second-controller"
    cloned = run_role(clone, settings)
    assert cloned.rc == 0, cloned.out
    assert git(clone, "rev-parse", "HEAD") == git(remote, "rev-parse", "main")
    assert len(git(remote, "log", "--format=%H", "main").split()) == 1


def test_a_custom_app_is_one_line_and_its_directory_stays_the_users(
    run_role: Callable[..., Run], tmp_path: Path
) -> None:
    dest = tmp_path / "gitops"
    result = run_role(dest, {"gitops_custom_apps": {"wiki": "productivity"}})
    assert result.rc == 0, result.out
    app = yaml.safe_load_all((dest / "cluster/platform/gitops/argocd/apps/wiki.yaml").read_text())
    spec = next(iter(app))["spec"]
    assert spec["source"]["path"] == "cluster/apps/productivity/wiki"
    assert spec["project"] == "productivity"
    assert not (dest / "cluster/apps/productivity/wiki").exists()
    bad = run_role(tmp_path / "other", {"gitops_custom_apps": {"wiki": "games"}})
    assert bad.rc != 0
    assert "gitops_custom_apps.wiki: area games is not one of media, productivity, ai, web" in bad.out


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The lab's Git server (lab/git_http.py) on a free local port: (repository URL, token)."""
    spec = importlib.util.spec_from_file_location("git_http", REPO / "lab" / "git_http.py")
    assert spec and spec.loader
    git_http = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(git_http)
    token = secrets.token_urlsafe(16)
    root = tmp_path / "served"
    root.mkdir()
    git_http.ensure_repository(root, "cluster.git")
    server = git_http.make_server(root, ("git", token), 0, "127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cluster.git", token
    server.shutdown()


def test_push_over_http_with_the_referenced_token_which_stays_secret(
    run_role: Callable[..., Run], tmp_path: Path, git_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = git_server
    settings = {
        "gitops_repo_url": url,
        "gitops_push": True,
        "homelab_secret_refs": {"gitops_repo_password": "env:HOMELAB_TEST_GIT_TOKEN"},
    }
    monkeypatch.setenv("HOMELAB_TEST_GIT_TOKEN", token)
    dest = tmp_path / "gitops"
    first = run_role(dest, settings, "-v")
    assert first.rc == 0, first.out
    remote_head = git(dest, "ls-remote", str(tmp_path / "served" / "cluster.git"), "main").split()[0]
    assert remote_head == git(dest, "rev-parse", "HEAD").strip()
    assert token not in first.out
    for path in dest.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"the token was written to {path}"
    # A second controller clones with the same reference; a wrong token is refused clearly.
    assert run_role(tmp_path / "second", settings).rc == 0
    monkeypatch.setenv("HOMELAB_TEST_GIT_TOKEN", token + "x")
    refused = run_role(tmp_path / "third", settings)
    assert refused.rc != 0
    assert "Check gitops_repo_url and its credentials (homelab_secret_refs.gitops_repo_password)" in refused.out
    assert token not in refused.out
    monkeypatch.delenv("HOMELAB_TEST_GIT_TOKEN")
    unset = run_role(tmp_path / "fourth", settings)
    assert unset.rc != 0
    assert "HOMELAB_TEST_GIT_TOKEN" in unset.out
