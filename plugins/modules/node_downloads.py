# Module: download checksummed release files and tarballs and install them, in one module run.
"""Download pinned release files and tarballs, verify their checksums and install them on a node."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
from typing import IO, Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

DOCUMENTATION = r"""
---
module: node_downloads
short_description: Download checksummed binaries and tarballs and install them on a node in one module run
description:
  - For each download, either installs the file itself at I(dest) (a release binary such as kubelet), or
    keeps the tarball in I(cache_dir) and installs the regular files of one of its directories into the
    directory I(dest) (containerd's C(bin/), the CNI plugins, crictl).
  - Every download is checked against its SHA-256 checksum, given or read from the checksum file the
    project publishes beside it. A file already installed with that checksum is not downloaded; a tarball
    in the cache with its checksum is not downloaded again.
  - An installed file whose content differs from the release (edited, replaced, truncated) is written
    again; one whose mode, owner or group differs gets them set. A rerun on an unchanged node reports
    C(changed) false and downloads nothing.
  - Replaces, per download, the directory, C(get_url), C(stat), unpack and C(copy) module runs of the
    usual task sequence with one module run for all of them.
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  downloads:
    description: The downloads, installed in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      url:
        description: Where to download the file or tarball from.
        type: str
        required: true
      checksum:
        description:
          - C(sha256:<digest>), or C(sha256:<url>) of a checksum file holding the bare digest or
            C(sha256sum) lines (the line naming the download's file name is used).
        type: str
        required: true
      dest:
        description:
          - Without I(unpack), the path of the installed file.
          - With I(unpack), the directory the tarball's files are installed into.
        type: path
        required: true
      unpack:
        description: The download is a gzipped tarball whose files are installed into I(dest).
        type: bool
        default: false
      archive_dir:
        description:
          - With I(unpack), the directory inside the tarball whose regular files are installed
            (C(bin) for containerd); empty for the tarball's top level. Subdirectories are not installed.
        type: str
        default: ""
      exclude:
        description: With I(unpack), names of files in I(archive_dir) not to install (a LICENSE, a README).
        type: list
        elements: str
        default: []
      mode:
        description: Mode of the installed files, as an octal string.
        type: str
        default: "0755"
  cache_dir:
    description: Directory the tarballs are kept in between runs (created when missing). Required with I(unpack).
    type: path
  directories:
    description: Further directories to create when missing (with mode C(0755)), for example a configuration
      directory beside the installed binaries.
    type: list
    elements: path
    default: []
  owner:
    description: Owner of the installed files and of the directories created.
    type: str
    default: root
  group:
    description: Group of the installed files and of the directories created.
    type: str
    default: root
  timeout:
    description: Seconds to wait for each HTTP response.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    details: Checksum files are read; nothing is downloaded or written. A tarball not in the cache yet
      reports its I(dest) as changed.
"""

EXAMPLES = r"""
- name: Install containerd, runc and the CNI plugins
  homelab.bootstrap.node_downloads:
    cache_dir: /var/cache/homelab/containerd
    downloads:
      - url: https://github.com/containerd/containerd/releases/download/v2.2.0/containerd-2.2.0-linux-amd64.tar.gz
        checksum: sha256:https://github.com/containerd/containerd/releases/download/v2.2.0/containerd-2.2.0-linux-amd64.tar.gz.sha256sum
        unpack: true
        archive_dir: bin
        dest: /usr/local/bin
      - url: https://github.com/opencontainers/runc/releases/download/v1.3.0/runc.amd64
        checksum: sha256:https://github.com/opencontainers/runc/releases/download/v1.3.0/runc.sha256sum
        dest: /usr/local/sbin/runc
  register: containerd_downloads
"""

RETURN = r"""
installed:
  description: Paths of the files (re)written, or in check mode that would be.
  returned: always
  type: list
  elements: str
files:
  description:
    - Every file the downloads manage, written or found as they should be (for a receipt of the node's state).
    - In check mode, a tarball not in the cache yet contributes nothing (its file names are unknown).
  returned: always
  type: list
  elements: str
downloaded:
  description: URLs fetched in this run (checksum files not counted).
  returned: always
  type: list
  elements: str
"""

SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
CHUNK = 1 << 20


def _sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
            return digest.hexdigest()
    except FileNotFoundError:
        return None


class Downloads:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.changed = False
        self.installed: list[str] = []
        self.files: list[str] = []
        self.downloaded: list[str] = []

    def fail(self, msg: str) -> None:
        self.module.fail_json(msg=msg, installed=self.installed, files=self.files, downloaded=self.downloaded)

    def _attributes(self, path: str, mode: str) -> None:
        attrs = {
            "path": path,
            "mode": mode,
            "owner": self.module.params["owner"],
            "group": self.module.params["group"],
            "secontext": [None, None, None, None],
            "attributes": None,
        }
        if os.path.exists(path):
            self.changed = self.module.set_fs_attributes_if_different(attrs, self.changed)

    def make_dirs(self, directory: str) -> None:
        missing: list[str] = []
        while directory and not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for path in reversed(missing):
            self.changed = True
            if not self.module.check_mode:
                os.mkdir(path)
                self._attributes(path, "0755")

    def _open(self, url: str) -> IO[bytes]:
        try:
            return open_url(url, timeout=self.module.params["timeout"], http_agent="homelab-bootstrap node_downloads")
        except Exception as exc:  # urllib's, ssl's and socket's errors alike: the message says which
            self.fail(f"{url}: the download failed: {exc}")
            raise  # fail() exits; this keeps type checkers informed

    def expected_sha256(self, spec: dict[str, Any]) -> str:
        algorithm, _, value = spec["checksum"].partition(":")
        if algorithm != "sha256" or not value:
            self.fail(f"{spec['url']}: checksum must be sha256:<digest> or sha256:<url>, not {spec['checksum']!r}")
        if SHA256_RE.match(value):
            return value.lower()
        text = self._open(value).read().decode("utf-8", "replace")
        name = os.path.basename(spec["url"].split("?")[0])
        lines = [line.split() for line in text.splitlines() if line.strip()]
        for fields in lines:
            if len(fields) == 1 and len(lines) == 1 and SHA256_RE.match(fields[0]):
                return fields[0].lower()
            if len(fields) >= 2 and SHA256_RE.match(fields[0]) and fields[-1].lstrip("*").removeprefix("./") == name:
                return fields[0].lower()
        self.fail(f"{value}: no SHA-256 digest for {name} in this checksum file")
        return ""

    def fetch(self, url: str, dest: str, expected: str, mode: str) -> None:
        """Download url next to dest and move it into place once its checksum is the expected one."""
        self.make_dirs(os.path.dirname(dest))
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                response = self._open(url)
                for block in iter(lambda: response.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != expected:
                self.fail(f"{url}: checksum mismatch: the download has sha256 {digest.hexdigest()}, not {expected}")
            self._attributes(tmp, mode)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.downloaded.append(url)

    def install_file(self, spec: dict[str, Any]) -> None:
        dest = spec["dest"]
        self.files.append(dest)
        expected = self.expected_sha256(spec)
        if _sha256_of(dest) != expected:
            self.changed = True
            self.installed.append(dest)
            if not self.module.check_mode:
                self.fetch(spec["url"], dest, expected, spec["mode"])
        self._attributes(dest, spec["mode"])

    def install_archive(self, spec: dict[str, Any]) -> None:
        cache_dir = self.module.params["cache_dir"]
        if not cache_dir:
            self.fail(f"{spec['url']}: unpack needs cache_dir, where the tarball is kept")
        archive = os.path.join(cache_dir, os.path.basename(spec["url"].split("?")[0]))
        expected = self.expected_sha256(spec)
        if _sha256_of(archive) != expected:
            if self.module.check_mode:
                self.changed = True
                self.installed.append(spec["dest"])
                return
            self.fetch(spec["url"], archive, expected, "0644")
        self.make_dirs(spec["dest"])
        top = spec["archive_dir"].strip("/").removeprefix("./")
        found = 0
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                path = member.name.removeprefix("./")
                if not member.isfile() or os.path.dirname(path) != top:
                    continue
                name = os.path.basename(path)
                if name in spec["exclude"]:
                    continue
                found += 1
                self._install_member(tar, member, os.path.join(spec["dest"], name), spec["mode"])
        if not found:
            self.fail(f"{spec['url']}: the tarball has no files in {top or 'its top level'} to install")

    def _install_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str, mode: str) -> None:
        self.files.append(dest)
        source = tar.extractfile(member)
        if source is None:
            return
        data = source.read()
        if _sha256_of(dest) != hashlib.sha256(data).hexdigest():
            self.changed = True
            self.installed.append(dest)
            if not self.module.check_mode:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(data)
                    self._attributes(tmp, mode)
                    os.replace(tmp, dest)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        self._attributes(dest, mode)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "downloads": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "url": {"type": "str", "required": True},
                    "checksum": {"type": "str", "required": True},
                    "dest": {"type": "path", "required": True},
                    "unpack": {"type": "bool", "default": False},
                    "archive_dir": {"type": "str", "default": ""},
                    "exclude": {"type": "list", "elements": "str", "default": []},
                    "mode": {"type": "str", "default": "0755"},
                },
            },
            "cache_dir": {"type": "path"},
            "directories": {"type": "list", "elements": "path", "default": []},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    run = Downloads(module)
    for spec in module.params["downloads"]:
        if not os.path.isabs(spec["dest"]):
            run.fail(f"{spec['dest']}: dest must be an absolute path")
        if spec["unpack"]:
            run.install_archive(spec)
        else:
            run.install_file(spec)
    for directory in module.params["directories"]:
        run.make_dirs(directory)
    module.exit_json(changed=run.changed, installed=run.installed, files=run.files, downloaded=run.downloaded)


if __name__ == "__main__":
    main()
