# The collections bundled by the pinned `ansible` package satisfy collections/requirements.yml.
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.utils.version import SemanticVersion

import ansible_collections
from tests.conftest import REPO

REQUIREMENTS = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())["collections"]
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())


def bundled_version(name: str) -> str:
    namespace, collection = name.split(".")
    for root in ansible_collections.__path__:
        manifest = Path(root) / namespace / collection / "MANIFEST.json"
        if manifest.is_file():
            return json.loads(manifest.read_text())["collection_info"]["version"]
    raise AssertionError(f"{name} is not installed in the virtualenv")


def satisfies(version: str, spec: str) -> bool:
    ops = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
    }
    have = SemanticVersion(version)
    for raw_clause in spec.split(","):
        clause = raw_clause.strip()
        op = next(o for o in (">=", "<=", "==", "!=", ">", "<") if clause.startswith(o))
        if not ops[op](have, SemanticVersion(clause[len(op) :].strip())):
            return False
    return True


@pytest.mark.parametrize("req", REQUIREMENTS, ids=[r["name"] for r in REQUIREMENTS])
def test_bundled_collection_satisfies_requirement(req: dict[str, str]) -> None:
    version = bundled_version(req["name"])
    assert satisfies(version, req["version"]), f"{req['name']} {version} is outside {req['version']}"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=[r["name"] for r in REQUIREMENTS])
def test_galaxy_dependencies_match_requirements(req: dict[str, str]) -> None:
    assert GALAXY["dependencies"][req["name"]] == req["version"]


def test_range_check_rejects_outside_versions() -> None:
    assert not satisfies("7.0.0", ">=5.0.0,<7.0.0")
    assert satisfies("6.2.0", ">=5.0.0,<7.0.0")
