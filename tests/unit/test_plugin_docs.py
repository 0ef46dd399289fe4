# Every plugin's DOCUMENTATION, EXAMPLES and RETURN is valid YAML (ansible-doc and ansible-lint read them).
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOC_BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")
PLUGINS = sorted(p for p in (REPO / "plugins").rglob("*.py") if "module_utils" not in p.parts)


def doc_blocks(path: Path) -> dict[str, str]:
    blocks = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in DOC_BLOCKS:
            assert isinstance(node.value, ast.Constant), f"{path.name}: {node.targets[0].id} is not a literal"
            blocks[node.targets[0].id] = node.value.value
    return blocks


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: str(p.relative_to(REPO)))
def test_documentation_is_valid_yaml(path: Path) -> None:
    for name, text in doc_blocks(path).items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.relative_to(REPO)} {name}: {exc}")


def test_every_module_is_documented() -> None:
    modules = sorted((REPO / "plugins" / "modules").glob("*.py"))
    assert modules
    for path in modules:
        assert set(doc_blocks(path)) == set(DOC_BLOCKS), path.name
