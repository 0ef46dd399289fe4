"""The controller side of node_receipts: a role's fingerprint from its files and declared inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.homelab.bootstrap.plugins.action import node_receipts as nr

INPUTS = ["greeting", "name | upper", "ansible_facts['os_family']", "optional_setting", "listing"]


@pytest.fixture
def roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A role `demo` depending on `base`: defaults layered base < demo < host < demo's vars."""
    files = {
        "base/defaults/main.yml": {"name": "base", "greeting": "hello {{ name }}"},
        "demo/meta/main.yml": {"dependencies": [{"role": "base"}]},
        "demo/defaults/main/a.yml": {"name": "demo"},
        "demo/vars/main.yml": {"listing": ["{{ name }}", 2]},
        "demo/vars/receipt.yml": {"__demo_receipt_inputs": INPUTS},
        "demo/tasks/main.yml": [{"ansible.builtin.debug": {"msg": "{{ greeting }}"}}],
    }
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(yaml.safe_dump(content))
    monkeypatch.setattr(nr, "ROLES_DIR", tmp_path)
    return tmp_path


def action() -> Any:
    loader = DataLoader()
    plugin = object.__new__(nr.ActionModule)  # only the loader and the templar are used by fingerprint
    plugin._loader = loader
    plugin._templar = Templar(loader=loader, variables={})
    return plugin


def one_by_one(task_vars: dict[str, Any], roles: Path) -> dict[str, str]:
    """The inputs rendered one template each, the way the fingerprint is defined."""
    plugin = action()
    layered = {
        **plugin.role_defaults(roles / "demo", {"demo"}),
        **task_vars,
        **plugin.load_vars(nr.var_files(roles / "demo", "vars")),
    }
    templar = plugin._templar.copy_with_new_env(available_variables=layered)
    return {e: nr.value_digest(nr.ActionModule.template_or_undefined(templar, e)) for e in INPUTS}


HOST = {"name": "host", "ansible_facts": {"os_family": "Debian"}}


def test_inputs_are_rendered_with_the_variables_the_role_sees(roles: Path) -> None:
    got = action().fingerprint("homelab.bootstrap.demo", {**HOST, "optional_setting": {"a": [1]}})
    expected = {
        "greeting": "hello host",
        "name | upper": "HOST",
        "ansible_facts['os_family']": "Debian",
        "optional_setting": {"a": [1]},
        "listing": ["host", 2],
    }
    assert got["inputs"] == {e: nr.value_digest(v) for e, v in expected.items()}
    assert got == action().fingerprint("demo", {**HOST, "optional_setting": {"a": [1]}})


def test_one_template_for_all_inputs_gives_the_digests_of_one_template_each(roles: Path) -> None:
    task_vars = {**HOST, "optional_setting": "x"}
    assert action().fingerprint("demo", task_vars)["inputs"] == one_by_one(task_vars, roles)


def test_an_undefined_input_is_marked_and_the_others_keep_their_values(roles: Path) -> None:
    got = action().fingerprint("demo", HOST)["inputs"]
    assert got["optional_setting"] == nr.value_digest(nr.UNDEFINED)
    assert got == one_by_one(HOST, roles)
    assert got["name | upper"] == nr.value_digest("HOST")


def test_a_changed_input_or_role_file_changes_the_fingerprint(roles: Path) -> None:
    before = action().fingerprint("demo", HOST)
    assert action().fingerprint("demo", {**HOST, "name": "other"})["inputs"]["greeting"] != before["inputs"]["greeting"]
    (roles / "demo/tasks/main.yml").write_text("[]\n")
    assert action().fingerprint("demo", HOST)["role_files"] != before["role_files"]


def test_templates_stay_unrendered_in_the_loaded_files(roles: Path) -> None:
    """Reading the loader's cached copy must not alter it for the tasks that load it after us."""
    plugin = action()
    plugin.fingerprint("demo", HOST)
    again = plugin._loader.load_from_file(str(roles / "base/defaults/main.yml"), trusted_as_template=True)
    assert again == {"name": "base", "greeting": "hello {{ name }}"}
