# Action plugin behind homelab.bootstrap.node_receipts: fingerprints roles on the controller, then checks on the node.
"""Add each role's fingerprint (its files and the values of its declared inputs) to a node_receipts call.

A role's inputs are declared in roles/<role>/vars/receipt.yml as `__<role>_receipt_inputs`: the
variables (or expressions, such as ``ansible_facts['os_family']``) its converge tasks, templates and
handlers read. tests/unit/test_node_receipts_inputs.py checks that the list misses none of them.
The values are templated with the variables the role itself would see: its dependencies' and its
own defaults, under the host's variables, under the role's vars/main; so the fingerprint is the
same whether it is computed before the role runs (one check for several roles) or inside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleUndefinedVariable
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

# roles/ of this collection (plugins/action/ is two levels below its root).
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
MODULE = "homelab.bootstrap.node_receipts"
MODULE_ARGS = (
    "dir",
    "files",
    "copies",
    "exists",
    "absent",
    "units",
    "sysctls",
    "packages",
    "swap_off",
    "hostname",
    "facts",
)
UNDEFINED = "<undefined>"


def role_name(name: str) -> str:
    """node_os from homelab.bootstrap.node_os or node_os."""
    return name.rsplit(".", 1)[-1]


def role_dir(name: str) -> Path:
    path = ROLES_DIR / role_name(name)
    if not (path / "vars" / "receipt.yml").is_file():
        raise AnsibleActionFail(
            f"node_receipts: role {name} declares no inputs (roles/{role_name(name)}/vars/receipt.yml)"
        )
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_digest(root: Path) -> str:
    """One digest over every file of a role: its tasks, templates, defaults, vars, handlers and meta."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        lines.append(f"{path.relative_to(root).as_posix()}\0{digest(path.read_bytes())}")
    return digest("\n".join(lines).encode())


def value_digest(value: Any) -> str:
    return digest(json.dumps(value, sort_keys=True, default=str).encode())


def var_files(root: Path, kind: str) -> list[Path]:
    """defaults/main.yml or defaults/main/*.yml (likewise vars), in the order Ansible merges them."""
    single = root / kind / "main.yml"
    return [single] if single.is_file() else sorted((root / kind / "main").glob("*.yml"))


def dependencies(root: Path, loaded: Mapping[str, Any] | None) -> list[str]:
    deps = (loaded or {}).get("dependencies") or []
    return [role_name(d["role"] if isinstance(d, Mapping) else str(d)) for d in deps]


class ActionModule(ActionBase):
    """check: [roles] -> which receipts hold; record: role (+ what it manages) -> write its receipt."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"check", "record", *MODULE_ARGS})

    def load_vars(self, paths: Iterable[Path]) -> dict[str, Any]:
        # unsafe=True: the loader's cached copy itself, not a deep copy of it (the copies were a
        # fifth of the controller's CPU in a no-op run); nothing here modifies what it loaded.
        merged: dict[str, Any] = {}
        for path in paths:
            merged.update(self._loader.load_from_file(str(path), trusted_as_template=True, unsafe=True) or {})
        return merged

    def role_defaults(self, root: Path, seen: set[str]) -> dict[str, Any]:
        """The defaults of a role's dependencies (recursively), then its own."""
        merged: dict[str, Any] = {}
        meta = root / "meta" / "main.yml"
        for dep in dependencies(root, self._loader.load_from_file(str(meta)) if meta.is_file() else None):
            if dep not in seen and (ROLES_DIR / dep).is_dir():
                seen.add(dep)
                merged.update(self.role_defaults(ROLES_DIR / dep, seen))
        merged.update(self.load_vars(var_files(root, "defaults")))
        return merged

    def fingerprint(self, name: str, task_vars: Mapping[str, Any]) -> dict[str, Any]:
        root = role_dir(name)
        inputs = self.load_vars([root / "vars" / "receipt.yml"]).get(f"__{role_name(name)}_receipt_inputs")
        if not isinstance(inputs, list) or not inputs:
            raise AnsibleActionFail(
                f"node_receipts: roles/{root.name}/vars/receipt.yml has no __{root.name}_receipt_inputs list"
            )
        layered = {
            **self.role_defaults(root, {root.name}),
            **task_vars,
            **self.load_vars(var_files(root, "vars")),
        }
        templar = self._templar.copy_with_new_env(available_variables=layered)
        expressions = [str(expression) for expression in inputs]
        try:
            # One template for all the inputs (compiling a template per input cost more than rendering).
            rendered = templar.template(trust_as_template("{{ [" + ", ".join(f"({e})" for e in expressions) + "] }}"))
        except AnsibleUndefinedVariable:
            rendered = [self.template_or_undefined(templar, e) for e in expressions]
        return {
            "role_files": files_digest(root),
            "inputs": {e: value_digest(value) for e, value in zip(expressions, rendered, strict=True)},
        }

    @staticmethod
    def template_or_undefined(templar: Any, expression: str) -> Any:
        try:
            return templar.template(trust_as_template("{{ " + expression + " }}"))
        except AnsibleUndefinedVariable:
            return UNDEFINED

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        if ("check" in args) == ("record" in args):
            raise AnsibleActionFail("node_receipts: give either check (a list of roles) or record (one role)")
        module_args = {key: args[key] for key in MODULE_ARGS if key in args}
        if "check" in args:
            roles = args["check"]
            roles = [roles] if isinstance(roles, str) else list(roles or [])
            module_args["check"] = {role_name(r): self.fingerprint(r, task_vars) for r in roles}
        else:
            module_args["record"] = role_name(str(args["record"]))
            module_args["fingerprint"] = self.fingerprint(str(args["record"]), task_vars)
        return self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
