# The node_files module, run by real Ansible on the controller in a temporary directory: it
# writes what differs (content, mode, missing directories), leaves the rest, and says so.
from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import run_module_locally


def node_files(files: list[dict[str, Any]], *flags: str) -> dict[str, Any]:
    return run_module_locally("homelab.bootstrap.node_files", {"files": files}, *flags)


def test_writes_files_and_their_directories_then_changes_nothing(tmp_path: Path) -> None:
    files = [
        {"path": str(tmp_path / "certs.d" / "quay.io" / "hosts.toml"), "content": 'server = "https://quay.io"\n'},
        {"path": str(tmp_path / "certs.d" / "ghcr.io" / "hosts.toml"), "content": "b\n", "mode": "0600"},
    ]
    first = node_files(files)
    assert first["changed"] is True, first
    assert sorted(first["written"]) == sorted(f["path"] for f in files)
    assert (tmp_path / "certs.d/quay.io/hosts.toml").read_text() == 'server = "https://quay.io"\n'
    assert oct((tmp_path / "certs.d/quay.io/hosts.toml").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "certs.d/ghcr.io/hosts.toml").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "certs.d/quay.io").stat().st_mode & 0o777) == "0o755"

    second = node_files(files)
    assert second["changed"] is False and second["written"] == [], second


def test_rewrites_only_what_differs_and_check_mode_writes_nothing(tmp_path: Path) -> None:
    same = tmp_path / "same.toml"
    edited = tmp_path / "edited.toml"
    loose = tmp_path / "loose.toml"
    for path in (same, edited, loose):
        path.write_text("x\n")
        path.chmod(0o644)
    loose.chmod(0o666)
    edited.write_text("changed by hand\n")
    files = [{"path": str(p), "content": "x\n"} for p in (same, edited, loose)]
    files.append({"path": str(tmp_path / "new" / "file"), "content": "n\n"})

    check = node_files(files, "--check")
    assert check["changed"] is True
    assert sorted(check["written"]) == sorted([str(edited), str(tmp_path / "new" / "file")])
    assert edited.read_text() == "changed by hand\n"
    assert not (tmp_path / "new").exists()
    assert oct(loose.stat().st_mode & 0o777) == "0o666"

    result = node_files(files)
    assert result["changed"] is True
    assert edited.read_text() == "x\n"
    assert oct(loose.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "new" / "file").read_text() == "n\n"
    assert node_files(files)["changed"] is False


def test_a_relative_path_is_refused(tmp_path: Path) -> None:
    result = node_files([{"path": "relative/hosts.toml", "content": "x"}])
    assert result.get("failed") is True
    assert "must be absolute" in result["msg"]


def test_diff_mode_shows_what_changes(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text("version = 2\n")
    result = node_files([{"path": str(target), "content": "version = 3\n"}], "--diff", "--check")
    assert result["diff"] == [
        {"before_header": str(target), "after_header": str(target), "before": "version = 2\n", "after": "version = 3\n"}
    ]
    assert target.read_text() == "version = 2\n"
