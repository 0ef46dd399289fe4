# Shared pytest helpers: building inventories from the example plus a fixture's changes.
from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = REPO / "inventory" / "example"


def run_module_locally(module: str, args: dict[str, Any], *flags: str) -> dict[str, Any]:
    """One ad-hoc run of a collection module on localhost, as the current user; its JSON result."""
    args = {"owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name, **args}
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    env |= {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_CACHE_PLUGIN": "memory"}
    cmd = [str(REPO / ".venv" / "bin" / "ansible"), "localhost", "-m", module, "-a", json.dumps(args), *flags]
    cmd += ["-e", f"ansible_python_interpreter={REPO / '.venv' / 'bin' / 'python'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    output = json.loads(proc.stdout)
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def load_script(name: str, path: Path) -> ModuleType:
    """Import a standalone script (lab/, tools/) as a module for its unit tests."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _drop_hosts(node: Any, names: set[str]) -> None:
    if isinstance(node, dict):
        hosts = node.get("hosts")
        if isinstance(hosts, dict):
            for name in names:
                hosts.pop(name, None)
        for child in node.values():
            _drop_hosts(child, names)


def materialize(case: dict[str, Any], dest: Path) -> Path:
    """Write the example inventory with a fixture's changes (hosts, vars, host_vars) to dest."""
    shutil.copytree(EXAMPLE_INVENTORY, dest)
    hosts = case.get("hosts") or yaml.safe_load((EXAMPLE_INVENTORY / "hosts.yml").read_text())
    _drop_hosts(hosts, set(case.get("remove_hosts", [])))
    (dest / "hosts.yml").write_text(yaml.safe_dump(hosts))
    if case.get("vars"):
        # Loaded after the example's files in group_vars/all, so these values win.
        (dest / "group_vars" / "all" / "zz_fixture.yml").write_text(yaml.safe_dump(case["vars"]))
    for host, host_vars in (case.get("host_vars") or {}).items():
        (dest / "host_vars").mkdir(exist_ok=True)
        (dest / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(host_vars))
    return dest


@pytest.fixture
def inventory_from(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def build(case: dict[str, Any]) -> Path:
        return materialize(case, tmp_path / "inventory")

    return build
