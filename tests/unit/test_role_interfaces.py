# Every role documents its interface: defaults and meta/argument_specs.yml agree.
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def role_defaults(role: Path) -> dict:
    values: dict = {}
    files = sorted(role.glob("defaults/main.yml")) + sorted(role.glob("defaults/main/*.yml"))
    for path in files:
        values.update(yaml.safe_load(path.read_text()) or {})
    return values


def role_options(role: Path) -> dict:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_argument_specs(role: Path) -> None:
    assert (role / "meta" / "argument_specs.yml").is_file()


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_default_is_documented_with_the_same_value(role: Path) -> None:
    defaults = role_defaults(role)
    options = role_options(role)
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"{role.name}: defaults without argument_specs entry: {undocumented}"
    for name, spec in options.items():
        assert spec.get("description"), f"{role.name}: {name} has no description"
        if "default" in spec:
            assert spec["default"] == defaults.get(name), f"{role.name}: {name} default differs from defaults/"


def test_versions_are_pinned_once() -> None:
    """Only cluster_defaults pins versions; other roles reference them."""
    offenders = []
    for role in ROLES:
        if role.name == "cluster_defaults":
            continue
        for name, value in role_defaults(role).items():
            if name.endswith("_version") and isinstance(value, str) and "{{" not in value:
                offenders.append(f"{role.name}: {name}")
    assert not offenders, offenders


def test_every_pinned_version_is_annotated_for_renovate() -> None:
    lines = (REPO / "roles/cluster_defaults/defaults/main/versions.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.split(":")[0].endswith("_version"):
            previous = [p for p in lines[max(0, i - 2) : i] if p.startswith("# renovate:")]
            assert previous, f"{line.split(':')[0]} has no '# renovate:' annotation above it"
