# lab/mirror/fill_from_upstream.py: what it fetches for the GitOps phases and how it checks the chart.
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_script

fu = load_script("fill_from_upstream", REPO / "lab/mirror/fill_from_upstream.py")
VERSIONS = {"cilium_version": "1.20.2", "argocd_version": "3.6.1"}


def test_gitops_files_keep_the_upstream_layout_index_first() -> None:
    assert [str(p) for p in fu.gitops_files(VERSIONS)] == [
        "helm.cilium.io/index.yaml",
        "helm.cilium.io/cilium-1.20.2.tgz",
        "raw.githubusercontent.com/argoproj/argo-cd/v3.6.1/manifests/install.yaml",
        "raw.githubusercontent.com/argoproj/argo-cd/v3.6.1/manifests/ha/install.yaml",
    ]


def test_chart_digest() -> None:
    index = {"entries": {"cilium": [{"version": "1.20.1", "digest": "a" * 64}, {"version": "1.20.2", "digest": "b"}]}}
    assert fu.chart_digest(index, "cilium", "1.20.2") == "b"
    with pytest.raises(fu.build.BuildError, match=r"lists no cilium 1\.19\.0"):
        fu.chart_digest(index, "cilium", "1.19.0")
    with pytest.raises(fu.build.BuildError):
        fu.chart_digest(None, "cilium", "1.20.2")


def _upstream(tmp_path: Path, chart: bytes, digest: str) -> dict[str, bytes]:
    index = {"entries": {"cilium": [{"version": "1.20.2", "digest": digest}]}}
    return {
        "https://helm.cilium.io/index.yaml": yaml.safe_dump(index).encode(),
        "https://helm.cilium.io/cilium-1.20.2.tgz": chart,
    }


@pytest.mark.parametrize("tampered", [False, True])
def test_chart_is_checked_against_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampered: bool) -> None:
    chart = b"chart archive"
    served = _upstream(tmp_path, b"other bytes" if tampered else chart, hashlib.sha256(chart).hexdigest())

    def fetch(url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(served[url])

    monkeypatch.setattr(fu, "fetch", fetch)
    files = tmp_path / "files"
    index, archive = fu.gitops_files(VERSIONS)[:2]
    fu.fill_gitops_file(files, index, VERSIONS)
    if tampered:
        with pytest.raises(fu.build.BuildError, match="checksum mismatch"):
            fu.fill_gitops_file(files, archive, VERSIONS)
        assert not (files / archive).exists()
    else:
        fu.fill_gitops_file(files, archive, VERSIONS)
        assert (files / archive).read_bytes() == chart
