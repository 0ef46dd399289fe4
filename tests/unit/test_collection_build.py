# The repository builds as the homelab.bootstrap collection, without the lab and test folders.
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from tests.conftest import REPO


def test_collection_builds_without_lab_and_tests(tmp_path: Path) -> None:
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    subprocess.run(
        [str(galaxy), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (tarball,) = tmp_path.glob("homelab-bootstrap-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "plugins/action/validate_inventory.py" in names
    assert "roles/cluster_defaults/defaults/main/versions.yml" in names
    assert "playbooks/preflight.yml" in names
    for excluded in ("lab/", "tests/", "molecule/", "collections/ansible_collections", ".venv/"):
        assert not [n for n in names if n.startswith(excluded)], excluded
