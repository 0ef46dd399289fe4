# Every variable a role's converge reads is an input of its receipt fingerprint (vars/receipt.yml).
"""A role with a receipt is skipped while its fingerprint is unchanged; a variable it reads that is
missing from its declared inputs would let a changed setting go unapplied. This test reads the
role's converge (tasks reachable from tasks/converge.yml, handlers, templates, the role vars they
use) with Jinja's parser and fails for every variable that is neither declared, nor defined by the
role itself (register, set_fact, loop variables, task vars, OS vars files), nor Ansible's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import meta, nodes

from tests.conftest import REPO

# Ansible's regular expressions in Jinja string literals ('\s') are no concern of this analysis.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

ROLES = sorted(p.parent.parent for p in (REPO / "roles").glob("*/vars/receipt.yml"))
# Bare Jinja expressions in these task keys (everything else is a template string).
CONDITIONALS = {"when", "changed_when", "failed_when", "until", "that"}
# Ansible's magic variables and Jinja globals that are no setting of the role. What the run
# does (check mode, tags, the hosts of this run) is no input: it changes no managed state.
ALLOWED = {
    "ansible_check_mode",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_batch",
    "ansible_limit",
    "ansible_managed",
    "role_path",
    "playbook_dir",
    "omit",
    "lookup",
    "query",
    "q",
    "dict",
    "range",
    "namespace",
    "undef",
}
# Accessed by constant key only; each key used is an input of its own.
KEYED = {"ansible_facts", "groups"}
TASK_INCLUDES = ("ansible.builtin.import_tasks", "ansible.builtin.include_tasks")


class AnyName(dict):  # type: ignore[type-arg]
    """Every filter and test name exists: the analysis needs Ansible's names, not their code."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> Any:
        return lambda *args, **kwargs: None

    def get(self, key: str, default: Any = None) -> Any:
        return self[key]


ENV = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])
ENV.filters = AnyName(ENV.filters)
ENV.tests = AnyName(ENV.tests)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def parse(source: str, bare: bool) -> nodes.Template:
    return ENV.parse("{{ " + source + " }}" if bare and "{{" not in source else source)


def references(tree: nodes.Template) -> set[tuple[str, str | None]]:
    """(name, None) for each free variable; (keyed name, key) for each ansible_facts['key'] and the like."""
    refs: set[tuple[str, str | None]] = set()
    covered: set[int] = set()
    for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
        if isinstance(node.node, nodes.Name) and node.node.name in KEYED:
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            refs.add((node.node.name, key if isinstance(key, str) else "<dynamic>"))
            covered.add(id(node.node))
    for name_node in tree.find_all(nodes.Name):
        if name_node.name in KEYED and id(name_node) not in covered and name_node.ctx == "load":
            refs.add((name_node.name, "<dynamic>"))
    # Jinja reports a name set inside an {% if %} as undeclared too (its other branch may read it).
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "store"}
    refs.update((name, None) for name in meta.find_undeclared_variables(tree) - stored if name not in KEYED)
    return refs


def strings(value: Any, key: str = "") -> Iterator[tuple[str, bool]]:
    """Every string in a task, and whether it is a bare expression."""
    if isinstance(value, str):
        if key in CONDITIONALS or "{{" in value or "{%" in value:
            yield value, key in CONDITIONALS
    elif isinstance(value, dict):
        for sub_key, sub in value.items():
            yield from strings(sub, str(sub_key))
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, key)


def tasks_of(items: Any) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from tasks_of(task.get(section))


class Converge:
    """The references and local definitions of a role's converge."""

    def __init__(self, role: Path) -> None:
        self.role = role
        self.refs: set[tuple[str, str | None]] = set()
        self.local: set[str] = {"item"}
        # Facts the converge gathers itself, e.g. ansible_facts['services'] from service_facts.
        self.local_keyed: set[tuple[str, str]] = set()
        self.role_vars: dict[str, Any] = load(role / "vars" / "main.yml") if (role / "vars/main.yml").is_file() else {}
        for os_vars in (role / "vars").glob("*.yml"):
            if os_vars.name not in ("main.yml", "receipt.yml"):
                self.local.update(load(os_vars))
        self.read_tasks(role / "tasks" / "converge.yml", set())
        if (role / "handlers/main.yml").is_file():
            self.read_task_list(load(role / "handlers/main.yml"), set())
        for template in (role / "templates").rglob("*.j2"):
            self.refs |= references(ENV.parse(template.read_text()))

    def read_tasks(self, path: Path, seen: set[Path]) -> None:
        if path in seen:
            return
        seen.add(path)
        self.read_task_list(load(path), seen)

    def read_task_list(self, task_list: Any, seen: set[Path]) -> None:
        for task in tasks_of(task_list):
            self.local.update(self.defined_by(task))
            if "ansible.builtin.service_facts" in task:
                self.local_keyed.add(("ansible_facts", "services"))
            for source, bare in strings(task):
                self.refs |= references(parse(source, bare))
            for action in TASK_INCLUDES:
                if action in task:
                    self.read_tasks(self.role / "tasks" / task[action], seen)

    @staticmethod
    def defined_by(task: dict[str, Any]) -> set[str]:
        names = set(task.get("vars") or {})
        if "register" in task:
            names.add(task["register"])
        names.add((task.get("loop_control") or {}).get("loop_var", "item"))
        facts = task.get("ansible.builtin.set_fact") or {}
        names.update(k for k in facts if k != "cacheable")
        return names


def declared(role: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """The declared inputs (with the names declared as no input): plain names, and (keyed name, key)
    pairs such as ansible_facts['os_family']."""
    receipt = load(role / "vars" / "receipt.yml")
    inputs = receipt[f"__{role.name}_receipt_inputs"]
    names: set[str] = set(receipt.get(f"__{role.name}_receipt_ignores") or [])
    keyed: set[tuple[str, str]] = set()
    for expression in inputs:
        tree = parse(expression, bare=True)
        body = tree.body[0].nodes[0]  # type: ignore[attr-defined]
        if isinstance(body, nodes.Name):
            names.add(body.name)
        else:
            keyed.update((n, k) for n, k in references(tree) if k is not None)
            names.update(n for n, k in references(tree) if k is None)
    return names, keyed


def missing_inputs(role: Path) -> list[str]:
    converge = Converge(role)
    names, keyed = declared(role)
    missing: set[str] = set()
    pending = sorted(converge.refs, key=str)
    resolved: set[str] = set()
    while pending:
        name, key = pending.pop()
        if key is not None:
            if (name, key) not in keyed | converge.local_keyed:
                missing.add(f"{name}['{key}']")
        elif name in names or name in converge.local or name in ALLOWED or name in resolved:
            continue
        elif name in converge.role_vars:
            resolved.add(name)
            for source, bare in strings({"value": converge.role_vars[name]}):
                pending.extend(references(parse(source, bare)))
        else:
            missing.add(name)
    return sorted(missing)


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_variable_the_converge_reads_is_an_input(role: Path) -> None:
    assert missing_inputs(role) == [], f"add them to roles/{role.name}/vars/receipt.yml"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_input_is_read(role: Path) -> None:
    """A declared input the role does not read would make reruns slower for nothing."""
    converge = Converge(role)
    names, keyed = declared(role)
    read = {name for name, key in converge.refs if key is None}
    pending = [n for n in read if n in converge.role_vars]
    while pending:
        for source, bare in strings({"value": converge.role_vars[pending.pop()]}):
            for name, key in references(parse(source, bare)):
                if key is None and name not in read:
                    read.add(name)
                    if name in converge.role_vars:
                        pending.append(name)
    unread = sorted(n for n in names if n not in read and n not in converge.role_vars)
    # Names declared as no input must still be read, or the declaration is stale.
    unread += sorted(f"{n}['{k}']" for n, k in keyed if (n, k) not in converge.refs)
    assert unread == [], f"roles/{role.name}/vars/receipt.yml declares inputs the converge never reads"


def test_roles_with_receipts() -> None:
    assert {r.name for r in ROLES} >= {"node_os", "containerd", "kubernetes_binaries", "vip", "kubeadm"}


def test_an_undeclared_variable_is_found(tmp_path: Path) -> None:
    """The test above can fail: a role reading a variable it does not declare is reported."""
    role = tmp_path / "demo"
    (role / "tasks").mkdir(parents=True)
    (role / "vars").mkdir()
    (role / "templates").mkdir()
    (role / "vars" / "receipt.yml").write_text(
        "__demo_receipt_inputs:\n  - demo_path\n  - ansible_facts['os_family']\n"
    )
    (role / "vars" / "main.yml").write_text('__demo_mode: "{{ demo_mode }}"\n')
    (role / "templates" / "x.j2").write_text("{{ demo_content }} {{ ansible_facts['distribution'] }}\n")
    (role / "tasks" / "converge.yml").write_text(
        "- ansible.builtin.import_tasks: more.yml\n"
        "- name: Copy\n  ansible.builtin.template: {src: x.j2, dest: '{{ demo_path }}', mode: '{{ __demo_mode }}'}\n"
        "  register: demo_result\n  when: ansible_facts['os_family'] == 'Debian' and demo_enabled\n"
    )
    (role / "tasks" / "more.yml").write_text(
        "- name: Loop\n  ansible.builtin.debug: {msg: '{{ demo_item }} {{ demo_result }}'}\n"
        "  loop: '{{ demo_list }}'\n  loop_control: {loop_var: demo_item}\n"
    )
    assert missing_inputs(role) == [
        "ansible_facts['distribution']",
        "demo_content",
        "demo_enabled",
        "demo_list",
        "demo_mode",
    ]
