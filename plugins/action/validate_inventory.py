# Action plugin behind homelab.bootstrap.validate_inventory: runs on the controller only.
"""Collect the inventory's groups and host variables and validate them (no SSH)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.homelab.bootstrap.plugins.module_utils.inventory_validation import (
    load_schema,
    user_settings,
    validate,
)

# roles/ sits two levels above plugins/action both in this repository and in the built collection.
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"


class ActionModule(ActionBase):
    """Validate the inventory against every role's argument specs and the cluster rules."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"roles_dir"})

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        roles_dir = Path(self._task.args.get("roles_dir") or ROLES_DIR)
        schema = load_schema(roles_dir)
        groups = {name: list(hosts) for name, hosts in task_vars.get("groups", {}).items()}
        hostvars_proxy = task_vars["hostvars"]
        hostvars: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for host in groups.get("k8s_cluster", []):
            host_view = hostvars_proxy[host]
            collected: dict[str, Any] = {}
            # Facts from the fact cache (a rerun) show up as host variables too; they are not settings.
            facts = set(host_view["ansible_facts"]) if "ansible_facts" in host_view else set()
            for name in user_settings(dict.fromkeys(host_view.keys())):
                if name in facts:
                    continue
                try:
                    collected[name] = host_view[name]
                except AnsibleError as exc:
                    problems.append(f"host {host}: setting {name} cannot be evaluated: {exc.message}")
            if "ansible_host" in host_view:
                collected["ansible_host"] = host_view["ansible_host"]
            hostvars[host] = collected
        problems.extend(validate(groups, hostvars, schema))
        result["changed"] = False
        result["hosts"] = len(groups.get("k8s_cluster", []))
        if problems:
            result["failed"] = True
            result["msg"] = f"The inventory has {len(problems)} problem(s); nothing was touched. Fix:\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        else:
            result["problems"] = []
            result["msg"] = f"Inventory valid: {result['hosts']} nodes."
        return result
