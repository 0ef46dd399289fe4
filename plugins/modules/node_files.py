# Module: write several small files (and their directories) on a node in one module run.
"""Write several files with given contents on a node, creating their directories."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: node_files
short_description: Write several small files and their directories on a node in one module run
description:
  - Writes each file whose content differs (atomically, a temporary file renamed into place), sets
    its owner, group and mode, and creates missing parent directories, all in one module run, where
    a C(file) and a C(template) loop would cost two module runs per file (for the registries' hosts.toml
    files of containerd, two per registry).
  - A file that already has the content, owner, group and mode is left alone; a rerun reports
    C(changed) false.
  - Files not listed are never touched or removed.
version_added: 0.1.0
author: homelab-bootstrap maintainers
options:
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      mode:
        description: Mode of the file, as an octal string.
        type: str
        default: "0644"
  owner:
    description: Owner of the files and of the directories created.
    type: str
    default: root
  group:
    description: Group of the files and of the directories created.
    type: str
    default: root
  directory_mode:
    description: Mode of the parent directories this module creates (existing ones keep theirs).
    type: str
    default: "0755"
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Write the registries' hosts.toml files
  homelab.bootstrap.node_files:
    files:
      - path: /etc/containerd/certs.d/docker.io/hosts.toml
        content: |
          server = "https://registry-1.docker.io"
"""

RETURN = r"""
written:
  description: Paths of the files whose content was (or in check mode would be) written.
  returned: always
  type: list
  elements: str
"""


def _attributes(module: AnsibleModule, path: str, mode: str) -> dict[str, Any]:
    """The file arguments set_fs_attributes_if_different expects (no SELinux context, no chattr)."""
    return {
        "path": path,
        "mode": mode,
        "owner": module.params["owner"],
        "group": module.params["group"],
        "secontext": [None, None, None, None],
        "attributes": None,
    }


def _make_dirs(module: AnsibleModule, path: str, changed: bool) -> bool:
    """Create path's missing parent directories with directory_mode, owner and group."""
    missing: list[str] = []
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        if not module.check_mode:
            os.mkdir(directory)
            attrs = _attributes(module, directory, module.params["directory_mode"])
            module.set_fs_attributes_if_different(attrs, False)
        changed = True
    return changed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "content": {"type": "str", "required": True, "no_log": False},
                    "mode": {"type": "str", "default": "0644"},
                },
            },
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "directory_mode": {"type": "str", "default": "0755"},
        },
        supports_check_mode=True,
    )
    changed = False
    written: list[str] = []
    diffs: list[dict[str, str]] = []
    for spec in module.params["files"]:
        path = spec["path"]
        if not os.path.isabs(path):
            module.fail_json(msg=f"{path}: the path must be absolute", written=written)
        data = spec["content"].encode()
        changed = _make_dirs(module, path, changed)
        try:
            with open(path, "rb") as current:
                before = current.read()
        except FileNotFoundError:
            before = None
        if before != data:
            written.append(path)
            if module._diff:
                diffs.append(
                    {
                        "before_header": path if before is not None else "/dev/null",
                        "after_header": path,
                        "before": (before or b"").decode(errors="replace"),
                        "after": spec["content"],
                    }
                )
            changed = True
            if not module.check_mode:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ansible-node-files-")
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                module.atomic_move(tmp, path)
        if module.check_mode and not os.path.exists(path):
            continue
        changed = module.set_fs_attributes_if_different(_attributes(module, path, spec["mode"]), changed)
    module.exit_json(changed=changed, written=written, diff=diffs)


if __name__ == "__main__":
    main()
