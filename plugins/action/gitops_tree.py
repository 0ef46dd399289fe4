# Action plugin behind homelab.bootstrap.gitops_tree: renders the whole tree on the controller.
"""Render the GitOps tree (templates + generated wiring + generated apps), then let the module write it.

Rendering happens here, in one pass with the play's variables, because the tree is a few
hundred files: one template task per file would cost seconds per run for nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

from ansible_collections.homelab.bootstrap.plugins.module_utils import gitops_apps, gitops_tree

MODULE_ARGS = (
    "dest",
    "branch",
    "remote",
    "push",
    "username",
    "password",
    "author_name",
    "author_email",
    "message",
)


def plain(value: Any) -> Any:
    """Ansible's tagged strings, lists and dicts as plain Python values (for yaml.safe_dump)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class ActionModule(ActionBase):
    """Render templates/tree/** for the enabled catalog entries, add the generated files, write."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"templates", "catalog", "apps", "settings", "files", *MODULE_ARGS})

    def render_templates(
        self, root: Path, catalog: dict[str, Any], entries: dict[str, Any], task_vars: dict[str, Any]
    ) -> dict[str, str]:
        templar = self._templar.copy_with_new_env(searchpath=[str(root)], available_variables=task_vars)
        files: dict[str, str] = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            target = rel.removesuffix(".j2")
            owner = gitops_tree.owner_of(target, catalog)
            if owner is not None and owner not in entries:
                continue
            text = path.read_text(encoding="utf-8")
            if rel.endswith(".j2"):
                try:
                    text = templar.template(trust_as_template(text), escape_backslashes=False)
                except Exception as exc:
                    raise AnsibleActionFail(f"rendering {rel} failed: {exc}") from exc
            files[target] = text
        return files

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        catalog: dict[str, Any] = plain(args["catalog"])
        settings: dict[str, Any] = plain(args["settings"])
        try:
            catalog.update(gitops_tree.custom_entries(settings.get("gitops_custom_apps") or {}, catalog))
            generated = gitops_tree.generate(catalog, settings)
            entries = gitops_tree.enabled(catalog, settings["homelab_components"], settings["homelab_apps"])
            app_files = gitops_apps.generate(plain(args.get("apps") or {}), entries, settings)
        except gitops_tree.TreeError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        files = self.render_templates(Path(args["templates"]), catalog, entries, task_vars)
        for source in (generated, app_files):
            clash = sorted(set(files) & set(source))
            if clash:
                raise AnsibleActionFail(f"files both templated and generated: {', '.join(clash)}")
            files.update(source)
        for rel, local in (args.get("files") or {}).items():
            if rel in files:
                raise AnsibleActionFail(f"{rel} is both a tree file and an extra file")
            try:
                files[rel] = Path(local).read_text(encoding="utf-8")
            except OSError as exc:
                raise AnsibleActionFail(f"cannot read {local} for {rel}: {exc}") from exc
        module_args = {k: args[k] for k in MODULE_ARGS if k in args}
        module_args["files"] = files
        return self._execute_module(
            module_name="homelab.bootstrap.gitops_tree", module_args=module_args, task_vars=task_vars
        )
