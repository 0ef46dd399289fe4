# preflight's unique-identity check (roles/preflight/tasks/identity.yml), run by Ansible on fake
# nodes: it reads every play host's facts, so nodes whose receipts hold (and which therefore skip
# the preflight role in playbooks/nodes.yml) are still compared with a new node.
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAYBOOK = """
- name: Fake nodes
  hosts: all
  gather_facts: false
  tasks:
    - name: Give each node the facts of the case
      ansible.builtin.set_fact:
        ansible_facts: "{{ node_facts[inventory_hostname] | default({}) }}"
    - name: Check identities, from the new node only (the others' receipts hold)
      ansible.builtin.include_role:
        name: preflight
        tasks_from: identity
      when: inventory_hostname == 'new'
"""


def run_check(tmp_path: Path, node_facts: dict[str, dict]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps({"node_facts": node_facts}))
    hosts = ",".join(node_facts) + ","
    extra = ["-e", f"@{tmp_path / 'vars.json'}", "-e", f"ansible_python_interpreter={sys.executable}"]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), str(tmp_path / "play.yml"), "-i", hosts, "-c", "local", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


def node(uuid: str, mac: str | None) -> dict:
    facts: dict = {"product_uuid": uuid}
    if mac is not None:
        facts["default_ipv4"] = {"macaddress": mac}
    return facts


def test_distinct_identities_pass(tmp_path: Path) -> None:
    result = run_check(tmp_path, {"old1": node("U1", "m1"), "old2": node("U2", "m2"), "new": node("U3", "m3")})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        # A new node cloned from an old one: found although only the new node runs the check.
        (
            {"old1": node("U1", "m1"), "old2": node("U2", "m2"), "new": node(" U1 ", "m3")},
            "product_uuid U1 on new, old1",
        ),
        ({"old1": node("U1", "m1"), "new": node("U2", "m1")}, "MAC m1 on new, old1"),
    ],
)
def test_a_new_node_sharing_an_identity_with_a_prepared_one_fails(tmp_path: Path, facts: dict, message: str) -> None:
    result = run_check(tmp_path, facts)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output and "regenerate them" in output


def test_missing_identities_are_not_duplicates(tmp_path: Path) -> None:
    # Boards without DMI report "NA"; a node without a default route has no MAC in its facts.
    result = run_check(tmp_path, {"old1": node("NA", None), "old2": node("NA", None), "new": node("NA", "m1")})
    assert result.returncode == 0, result.stdout + result.stderr
