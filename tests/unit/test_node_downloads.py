# The node_downloads module, run by real Ansible on the controller against a local HTTP server:
# it downloads and installs what is missing or differs, checks every checksum, keeps tarballs in
# its cache, and on a rerun downloads and writes nothing.
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_module_locally


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                server.requests.append(self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "upstream"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.httpd.shutdown()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def node_downloads(args: dict[str, Any], *flags: str) -> dict[str, Any]:
    return run_module_locally("homelab.bootstrap.node_downloads", args, *flags)


@pytest.fixture
def release(server: Server, tmp_path: Path) -> dict[str, Any]:
    """A binary with a bare-digest checksum file and a tarball with a sha256sum-style one."""
    binary = b"\x7fELF kubelet\n"
    archive = tarball({"bin/containerd": b"containerd\n", "bin/ctr": b"ctr\n", "bin/LICENSE": b"L\n", "README": b"r\n"})
    (server.root / "kubelet").write_bytes(binary)
    (server.root / "kubelet.sha256").write_text(sha256(binary) + "\n")
    (server.root / "containerd-9.9.tar.gz").write_bytes(archive)
    (server.root / "SHA256SUMS").write_text(
        f"{sha256(b'other')}  other.tar.gz\n{sha256(archive)} *containerd-9.9.tar.gz\n"
    )
    bin_dir = tmp_path / "node" / "usr" / "local" / "bin"
    return {
        "cache_dir": str(tmp_path / "node" / "cache"),
        "directories": [str(tmp_path / "node" / "etc" / "cni" / "net.d")],
        "downloads": [
            {
                "url": f"{server.url}/kubelet",
                "checksum": f"sha256:{server.url}/kubelet.sha256",
                "dest": str(bin_dir / "kubelet"),
            },
            {
                "url": f"{server.url}/containerd-9.9.tar.gz",
                "checksum": f"sha256:{server.url}/SHA256SUMS",
                "unpack": True,
                "archive_dir": "bin",
                "exclude": ["LICENSE"],
                "dest": str(bin_dir),
            },
        ],
    }


def test_installs_then_a_rerun_downloads_and_writes_nothing(
    server: Server, release: dict[str, Any], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "node/usr/local/bin"
    first = node_downloads(release)
    assert first["changed"] is True, first
    assert first["installed"] == [str(bin_dir / n) for n in ("kubelet", "containerd", "ctr")], first
    assert first["files"] == first["installed"]
    assert sorted(os.listdir(bin_dir)) == ["containerd", "ctr", "kubelet"]  # no LICENSE, no README
    assert (bin_dir / "ctr").read_bytes() == b"ctr\n"
    assert oct((bin_dir / "kubelet").stat().st_mode & 0o777) == "0o755"
    assert (tmp_path / "node/cache/containerd-9.9.tar.gz").is_file()
    assert (tmp_path / "node/etc/cni/net.d").is_dir()

    server.requests.clear()
    second = node_downloads(release)
    assert second["changed"] is False, second
    assert second["installed"] == [] and second["downloaded"] == []
    assert second["files"] == first["files"]
    # Only the two checksum files were read: neither the binary nor the tarball again.
    assert sorted(server.requests) == ["/SHA256SUMS", "/kubelet.sha256"]


def test_repairs_what_differs_from_the_release(server: Server, release: dict[str, Any], tmp_path: Path) -> None:
    bin_dir = tmp_path / "node/usr/local/bin"
    node_downloads(release)
    (bin_dir / "containerd").write_bytes(b"edited by hand\n")
    (bin_dir / "kubelet").chmod(0o700)
    (bin_dir / "kubelet").write_bytes(b"truncated")
    (bin_dir / "ctr").chmod(0o777)

    server.requests.clear()
    repaired = node_downloads(release)
    assert repaired["changed"] is True
    assert repaired["installed"] == [str(bin_dir / "kubelet"), str(bin_dir / "containerd")], repaired
    assert (bin_dir / "containerd").read_bytes() == b"containerd\n"
    assert (bin_dir / "kubelet").read_bytes() == b"\x7fELF kubelet\n"
    assert oct((bin_dir / "kubelet").stat().st_mode & 0o777) == "0o755"
    assert oct((bin_dir / "ctr").stat().st_mode & 0o777) == "0o755"
    # The tarball came from the cache.
    assert "/containerd-9.9.tar.gz" not in server.requests
    assert node_downloads(release)["changed"] is False


def test_check_mode_writes_nothing(release: dict[str, Any], tmp_path: Path) -> None:
    result = node_downloads(release, "--check")
    assert result["changed"] is True
    assert str(tmp_path / "node/usr/local/bin/kubelet") in result["installed"]
    assert not (tmp_path / "node").exists()


def test_a_checksum_mismatch_fails_and_installs_nothing(
    server: Server, release: dict[str, Any], tmp_path: Path
) -> None:
    (server.root / "kubelet").write_bytes(b"tampered with on the way\n")
    result = node_downloads(release)
    assert result.get("failed") is True, result
    assert "checksum mismatch" in result["msg"] and "/kubelet" in result["msg"]
    bin_dir = tmp_path / "node/usr/local/bin"
    assert not (bin_dir / "kubelet").exists()
    assert [p.name for p in bin_dir.iterdir()] == []  # no temporary file left behind


def test_a_pinned_digest_needs_no_checksum_file(server: Server, release: dict[str, Any]) -> None:
    (server.root / "kubelet.sha256").unlink()
    release["downloads"][0]["checksum"] = "sha256:" + sha256(b"\x7fELF kubelet\n")
    assert node_downloads(release)["changed"] is True
    wrong = dict(release, downloads=[dict(release["downloads"][1], checksum=f"sha256:{server.url}/kubelet.sha256")])
    failed = node_downloads(wrong)
    assert failed.get("failed") is True and "download failed" in failed["msg"], failed
