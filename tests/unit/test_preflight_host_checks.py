# The preflight role's fact checks (OS, architecture, CPUs, memory), run by real Ansible on the
# controller with the node's facts given: every problem of a node is reported at once, each
# saying what to change.
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

ANSIBLE = REPO / ".venv" / "bin" / "ansible-playbook"
PLAYBOOK = """
- name: Run the preflight fact checks on given facts
  hosts: node
  gather_facts: false
  tasks:
    - name: Check the node
      ansible.builtin.include_role:
        name: preflight
        tasks_from: os
      vars:
        ansible_facts: "{{ node_facts }}"
"""
DEBIAN_AMD64 = {
    "distribution": "Debian",
    "distribution_major_version": "12",
    "distribution_version": "12.11",
    "architecture": "x86_64",
    "processor_vcpus": 2,
    "memtotal_mb": 4096,
}


def run_checks(tmp_path: Path, group: str, facts: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.ini"
    other = "workers" if group == "control_plane" else "control_plane"
    inventory.write_text(
        f"[{group}]\nnode ansible_connection=local ansible_python_interpreter={REPO / '.venv' / 'bin' / 'python'}\n"
        f"[{other}]\n[k8s_cluster:children]\ncontrol_plane\nworkers\n"
    )
    playbook = tmp_path / "checks.yml"
    playbook.write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    cmd = [str(ANSIBLE), str(playbook), "-i", str(inventory), "-e", json.dumps({"node_facts": facts})]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("group", ["control_plane", "workers"])
def test_a_supported_node_passes(tmp_path: Path, group: str) -> None:
    result = run_checks(tmp_path, group, DEBIAN_AMD64)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_problem_of_a_node_is_reported_at_once(tmp_path: Path) -> None:
    facts = {**DEBIAN_AMD64, "distribution_major_version": "10", "distribution_version": "10.13"}
    facts |= {"architecture": "riscv64", "processor_vcpus": 1, "memtotal_mb": 900}
    result = run_checks(tmp_path, "control_plane", facts)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "runs Debian 10.13, which is not supported" in out
    assert "reinstall the node or remove it from the inventory" in out
    assert "is riscv64; supported:" in out
    assert "has 1 CPUs and 900 MiB; a control plane needs at least 2 CPUs" in out
    assert "make it a worker" in out


def test_a_worker_needs_only_memory(tmp_path: Path) -> None:
    # One CPU is enough for a worker; too little memory is not.
    assert run_checks(tmp_path, "workers", {**DEBIAN_AMD64, "processor_vcpus": 1}).returncode == 0
    result = run_checks(tmp_path, "workers", {**DEBIAN_AMD64, "memtotal_mb": 300})
    assert result.returncode != 0
    assert "has 300 MiB; a worker needs at least" in " ".join(result.stdout.split())
