"""Unit tests for the pure parts of tools/bench_lab.py: recap parsing, download URLs, join secrets, the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_script

DEFAULTS = REPO / "roles/cluster_defaults/defaults/main"


bl = load_script("bench_lab", REPO / "tools/bench_lab.py")

RECAPS = """
PLAY RECAP *********************************************************************
cp1                        : ok=10   changed=3    unreachable=0    failed=0    skipped=2    rescued=0    ignored=0
worker1                    : ok=4    changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0

PLAY RECAP *********************************************************************
cp1                        : ok=5    changed=1    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
"""


def test_recaps_of_several_plays_are_summed_per_host() -> None:
    recap = bl.parse_recap(RECAPS)
    assert recap["cp1"] == {"ok": 15, "changed": 4, "unreachable": 0, "failed": 1, "skipped": 2}
    assert recap["worker1"]["changed"] == 0


def test_download_urls_follow_the_mirror_layout_of_downloads_yml() -> None:
    versions = yaml.safe_load((DEFAULTS / "versions.yml").read_text())
    urls = bl.download_urls((DEFAULTS / "downloads.yml").read_text(), versions, "http://m:8080/", "amd64")
    k8s = versions["kubernetes_version"]
    assert urls["kubernetes"] == f"http://m:8080/dl.k8s.io/release/v{k8s}/bin/linux/amd64"
    assert urls["runc"].endswith(f"/opencontainers/runc/releases/download/v{versions['runc_version']}/runc.amd64")
    assert {"containerd", "cni_plugins", "crictl"} <= urls.keys()


def test_join_secrets_come_from_the_init_output() -> None:
    output = (
        "You can now join any number of control-plane nodes running the following command on each as root:\n\n"
        "  kubeadm join k8s-api:8443 --token abcdef.0123456789abcdef \\\n"
        "\t--discovery-token-ca-cert-hash sha256:1234 \\\n"
        "\t--control-plane --certificate-key 9f8e\n"
    )
    assert bl.parse_join_secrets(output) == ("abcdef.0123456789abcdef", "sha256:1234", "9f8e")


def test_join_config_is_control_plane_only_with_a_certificate_key() -> None:
    worker = yaml.safe_load(bl.join_config("w1", "10.0.0.1", token="t", ca_hash="h", cert_key=None, api="a:1"))
    plane = yaml.safe_load(bl.join_config("cp2", "10.0.0.2", token="t", ca_hash="h", cert_key="k", api="a:1"))
    assert "controlPlane" not in worker
    assert plane["controlPlane"]["certificateKey"] == "k"
    assert plane["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] == "10.0.0.2"


def test_table_aligns_columns() -> None:
    lines = bl.table([("a", "1", "x", "yes"), ("longer", "22", "", "")]).splitlines()
    assert lines[2].index("1") == lines[3].index("22") == lines[0].index("seconds")
    assert set(lines[1]) == {"-", " "}


def _run(name: str, seconds: float, cpu: float | None = None, nodes: int = 5) -> bl.Run:
    return bl.Run(name, seconds, 0, nodes, controller_cpu_seconds=cpu, host_busy=0.5 if cpu else None)


def test_report_puts_each_verdict_on_its_own_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        _run("full", 300, 100),
        _run("settle", 12),
        _run("noop", 31, 20),
        _run("add-worker3", 80, 40, 5),
        _run("add-worker4", 85, 42, 6),
        _run("add-worker5", 100, 44, 7),
        _run("baseline", 250),
    ]
    bl.report(runs, "stamp", tmp_path, tmp_path / "out.json", 1000.0)
    rows = {line.strip().split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    assert rows["(a) site.yml, fresh 3+2"][-1] == "yes"  # 300 / 250 = 1.2x
    assert rows["(b) no-op rerun, 5 nodes"][-1] == "NO"  # 31 s
    assert rows["(c) add worker at 5 nodes"][-1] == "yes"
    assert rows["(c) add worker at 7 nodes"][-1] == "NO"  # 100 s
    assert rows["(c) growth last/first"][-1] == "NO"  # 1.25x
    cpu = rows["add-worker5: controller CPU, host busy"]
    assert cpu[-5:] == ["44", "50%", "of", str(bl.os.cpu_count()), "cores"]  # informational: no verdict
    saved = bl.json.loads((tmp_path / "out.json").read_text())
    assert saved["ratios"]["add_controller_cpu_growth_last_over_first"] == 44 / 40


def test_host_cpu_jiffies_count_busy_within_total() -> None:
    busy, total = bl.host_cpu_jiffies()
    assert 0 < busy < total
