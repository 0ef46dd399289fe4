# The rejection suite: the real preflight playbook against valid and invalid inventories.
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

FIXTURES = REPO / "tests" / "inventories"
INVALID = sorted((FIXTURES / "invalid").glob("*.yml"))
VALID = sorted((FIXTURES / "valid").glob("*.yml"))
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_preflight(inventory: Path, *args: str, playbook: str = "preflight.yml") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), str(REPO / "playbooks" / playbook), "-i", str(inventory), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


def problems(output: str) -> list[str]:
    """The '  - ...' lines of the validator's failure message (block scalar in YAML output)."""
    return [line.strip()[2:] for line in output.splitlines() if line.startswith("          - ")]


def test_suite_is_large_enough() -> None:
    assert len(INVALID) >= 20
    assert len(VALID) >= 3


def test_example_inventory_passes() -> None:
    result = run_preflight(REPO / "inventory" / "example")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("fixture", VALID, ids=[f.stem for f in VALID])
def test_valid_inventory_accepted(fixture: Path, inventory_from: Callable[[dict], Path]) -> None:
    result = run_preflight(inventory_from(yaml.safe_load(fixture.read_text())))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("fixture", INVALID, ids=[f.stem for f in INVALID])
def test_invalid_inventory_rejected_with_its_message(fixture: Path, inventory_from: Callable[[dict], Path]) -> None:
    case = yaml.safe_load(fixture.read_text())
    result = run_preflight(inventory_from(case))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    found = problems(result.stdout)
    # Exactly the fixture's own problem: a fixture that trips other rules proves nothing.
    assert len(found) == 1, found
    assert case["expect"] in found[0], found
    if "must_not_contain" in case:
        assert case["must_not_contain"] not in output


@pytest.mark.parametrize("playbook", ["preflight.yml", "gitops.yml", "nodes.yml"])
def test_every_phase_validates_its_extra_vars_before_touching_anything(playbook: str) -> None:
    # A phase run on its own validates too (nodes.yml would otherwise connect to the example's
    # hosts, which do not exist: the run must stop before). key=value extra vars are strings.
    result = run_preflight(REPO / "inventory" / "example", "-e", "gitops_push=false", playbook=playbook)
    assert result.returncode != 0
    found = problems(result.stdout)
    assert len(found) == 1, result.stdout
    assert "gitops_push must be a boolean, not the string 'false'" in found[0]
    assert """-e '{"gitops_push": false}'""" in found[0]
    assert "UNREACHABLE" not in result.stdout
