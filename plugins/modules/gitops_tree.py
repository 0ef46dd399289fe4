#!/usr/bin/python
# Writes the generated GitOps tree into a Git working copy, commits it and pushes it.
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: gitops_tree
short_description: Write files the collection owns into a Git working copy, commit and push
description:
  - Used through the action plugin of the same name, which renders the tree on the controller
    and passes the files here.
  - Creates the working copy when missing (clone of O(remote) when reachable, else C(git init)).
  - Files this module wrote before are recorded with their checksums in C(.homelab-bootstrap.json).
    A recorded file is regenerated only if nobody edited it since; a file that is not recorded is
    never overwritten; a file the tree no longer has is removed only if unedited. Anything else
    is a conflict; the run stops before writing anything and names the files.
  - Commits only the files it owns, with a message naming what changed, and pushes when asked.
  - Supports check mode and diff mode.
version_added: "1.0.0"
author: homelab-bootstrap maintainers
options:
  dest:
    description: Path of the working copy on the controller.
    type: path
    required: true
  files:
    description: Relative path to content of every file the tree holds.
    type: dict
    required: true
  branch:
    description: Branch to commit to.
    type: str
    default: main
  remote:
    description: URL of the remote repository (origin). Empty for a local-only repository.
    type: str
    default: ""
  push:
    description: Push the branch to O(remote) after committing.
    type: bool
    default: false
  username:
    description: User name for HTTPS pushes and clones.
    type: str
    default: ""
  password:
    description: Password or token for HTTPS pushes and clones; given to git through GIT_ASKPASS only.
    type: str
    default: ""
  author_name:
    description: Commit author name, used when the repository has no user.name configured.
    type: str
    default: homelab-bootstrap
  author_email:
    description: Commit author e-mail, used when the repository has no user.email configured.
    type: str
    default: homelab-bootstrap@localhost
  message:
    description: First line of the commit message; the files changed are listed below it.
    type: str
    default: "homelab-bootstrap: update the cluster tree"
"""

EXAMPLES = r"""
- name: Write the tree
  homelab.bootstrap.gitops_tree:
    dest: ~/homelab-gitops
    files:
      cluster/apps/kustomization.yaml: "..."
    remote: https://git.example.com/homelab/cluster.git
    push: true
"""

RETURN = r"""
added:
  description: Files created.
  type: list
  elements: str
  returned: always
updated:
  description: Files regenerated with new content.
  type: list
  elements: str
  returned: always
removed:
  description: Files the tree no longer holds, deleted.
  type: list
  elements: str
  returned: always
commit:
  description: The commit made by this run, if any.
  type: str
  returned: when a commit was made
pushed:
  description: Whether the branch was pushed.
  type: bool
  returned: always
"""

MANIFEST = ".homelab-bootstrap.json"
DIFF_LIMIT = 64 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_relpath(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] == ".git":
        raise ValueError(f"refusing to write outside the working copy: {path}")
    return str(pure)


def plan(root: Path, files: dict[str, str], owned: dict[str, str]) -> dict[str, list[str]]:
    """Decide per file: add, update, remove, keep, or conflict (with the reason)."""
    result: dict[str, list[str]] = {"added": [], "updated": [], "removed": [], "conflicts": []}
    for rel, content in sorted(files.items()):
        path = root / rel
        if not path.exists():
            result["added"].append(rel)
            continue
        current = path.read_bytes()
        if current == content.encode():
            continue
        if rel not in owned:
            result["conflicts"].append(f"{rel}: exists but was not written by homelab-bootstrap")
        elif sha256(current) != owned[rel]:
            result["conflicts"].append(f"{rel}: edited since homelab-bootstrap last wrote it")
        else:
            result["updated"].append(rel)
    for rel in sorted(set(owned) - set(files)):
        path = root / rel
        if not path.exists():
            continue
        if sha256(path.read_bytes()) != owned[rel]:
            result["conflicts"].append(f"{rel}: no longer generated, but edited since homelab-bootstrap wrote it")
        else:
            result["removed"].append(rel)
    return result


class Git:
    """git on the controller, with HTTPS credentials handed over through GIT_ASKPASS only."""

    def __init__(self, module: AnsibleModule, root: Path) -> None:
        self.module = module
        self.root = root
        self.env: dict[str, str] = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        self._askpass_dir: str | None = None
        password = module.params["password"]
        if password:
            self._askpass_dir = tempfile.mkdtemp(prefix="homelab-askpass-")
            script = Path(self._askpass_dir) / "askpass"
            # Prints the user name or the password, read from this process's environment only.
            script.write_text(
                '#!/bin/sh\ncase "$1" in Username*) printf "%s\\n" "$HOMELAB_GIT_USERNAME";;'
                ' *) printf "%s\\n" "$HOMELAB_GIT_PASSWORD";; esac\n'
            )
            script.chmod(stat.S_IRWXU)
            self.env.update(
                GIT_ASKPASS=str(script),
                HOMELAB_GIT_USERNAME=module.params["username"] or "git",
                HOMELAB_GIT_PASSWORD=password,
            )

    def cleanup(self) -> None:
        if self._askpass_dir:
            shutil.rmtree(self._askpass_dir, ignore_errors=True)

    def run(self, *args: str, check: bool = True, cwd: Path | None = None) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command(
            ["git", *args], cwd=str(cwd or self.root), environ_update=self.env, check_rc=False
        )
        if check and rc != 0:
            self.cleanup()
            where = cwd or self.root
            self.module.fail_json(msg=f"git {' '.join(args[:2])} failed in {where}: {err.strip() or out.strip()}")
        return rc, out, err


def ensure_repository(module: AnsibleModule, git: Git, root: Path) -> bool:
    """Make root a working copy on the branch; True when it had to be created."""
    params = module.params
    branch, remote = params["branch"], params["remote"]
    if root.exists() and any(root.iterdir()):
        if not (root / ".git").exists():
            module.fail_json(
                msg=f"{root} exists, is not empty and is not a Git working copy: point gitops_repo_local_path "
                "at an empty directory or at a clone of your GitOps repository"
            )
        return False
    if module.check_mode:
        return True
    root.mkdir(parents=True, exist_ok=True)
    if remote:
        rc, _, err = git.run("clone", "--origin", "origin", remote, str(root), check=False, cwd=root.parent)
        if rc == 0:
            rc, _, _ = git.run("rev-parse", "--verify", "--quiet", "HEAD", check=False)
            if rc == 0:
                git.run("checkout", "-B", branch, *(["--track", f"origin/{branch}"] if remote_has(git, branch) else []))
            else:
                git.run("checkout", "--orphan", branch)
            return True
        if params["push"]:
            git.cleanup()
            module.fail_json(
                msg=f"cannot clone {remote}: {err.strip()}. Check gitops_repo_url and its credentials "
                "(homelab_secret_refs.gitops_repo_password), or set gitops_push: false to work locally"
            )
    git.run("init", "--quiet", "--initial-branch", branch)
    if remote:
        git.run("remote", "add", "origin", remote)
    return True


def remote_has(git: Git, branch: str) -> bool:
    rc, _, _ = git.run("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}", check=False)
    return rc == 0


def sync_with_remote(module: AnsibleModule, git: Git) -> None:
    """Fast-forward to the remote branch before writing, so a push never needs a merge."""
    branch = module.params["branch"]
    rc, _, err = git.run("fetch", "--quiet", "origin", check=False)
    if rc != 0:
        git.cleanup()
        module.fail_json(msg=f"cannot fetch from {module.params['remote']}: {err.strip()}")
    if not remote_has(git, branch):
        return
    rc, _, _ = git.run("merge", "--ff-only", "--quiet", f"origin/{branch}", check=False)
    if rc != 0:
        git.cleanup()
        module.fail_json(
            msg=f"the working copy's {branch} and origin/{branch} have diverged: merge or rebase them by hand "
            "(nothing was written)"
        )


def write_files(root: Path, files: dict[str, str], actions: dict[str, list[str]]) -> None:
    for rel in actions["added"] + actions["updated"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.homelab-tmp")
        tmp.write_text(files[rel])
        tmp.chmod(0o644)
        os.replace(tmp, path)
    for rel in actions["removed"]:
        (root / rel).unlink()
        parent = (root / rel).parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def commit_message(params: dict[str, Any], actions: dict[str, list[str]], pending: list[str]) -> str:
    lines = [params["message"], ""]
    for word in ("added", "updated", "removed"):
        for rel in actions[word]:
            lines.append(f"{word}: {rel}")
    extra = sorted(set(pending) - set(actions["added"] + actions["updated"] + actions["removed"]))
    lines.extend(f"recorded: {rel}" for rel in extra)
    return "\n".join(lines) + "\n"


def commit(module: AnsibleModule, git: Git, actions: dict[str, list[str]], paths: list[str]) -> str | None:
    """Commit the owned paths (and only those) when they differ from HEAD."""
    git.run("add", "--all", "--", *paths)
    rc, out, _ = git.run("diff", "--cached", "--name-only", "--", *paths, check=False)
    pending = out.split()
    if not pending:
        return None
    identity: list[str] = []
    for key, param in (("user.name", "author_name"), ("user.email", "author_email")):
        rc, _, _ = git.run("config", key, check=False)
        if rc != 0:
            identity += ["-c", f"{key}={module.params[param]}"]
    message = commit_message(module.params, actions, pending)
    git.run(*identity, "commit", "--quiet", "--no-verify", "-m", message, "--", *paths)
    return git.run("rev-parse", "HEAD")[1].strip()


def needs_push(git: Git, branch: str) -> bool:
    if not remote_has(git, branch):
        return True
    rc, out, _ = git.run("rev-list", "--count", f"origin/{branch}..HEAD", check=False)
    return rc != 0 or out.strip() != "0"


def diffs(root: Path, files: dict[str, str], actions: dict[str, list[str]]) -> list[dict[str, str]]:
    result = []
    for rel in actions["added"] + actions["updated"] + actions["removed"]:
        path = root / rel
        before = path.read_text() if path.exists() else ""
        after = files.get(rel, "")
        if len(before) > DIFF_LIMIT or len(after) > DIFF_LIMIT:
            before, after = f"({len(before)} bytes)\n", f"({len(after)} bytes)\n"
        result.append({"before_header": rel, "after_header": rel, "before": before, "after": after})
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "files": {"type": "dict", "required": True},
            "branch": {"type": "str", "default": "main"},
            "remote": {"type": "str", "default": ""},
            "push": {"type": "bool", "default": False},
            "username": {"type": "str", "default": ""},
            "password": {"type": "str", "default": "", "no_log": True},
            "author_name": {"type": "str", "default": "homelab-bootstrap"},
            "author_email": {"type": "str", "default": "homelab-bootstrap@localhost"},
            "message": {"type": "str", "default": "homelab-bootstrap: update the cluster tree"},
        },
        supports_check_mode=True,
    )
    params = module.params
    root = Path(params["dest"]).expanduser()
    try:
        files = {safe_relpath(k): str(v) for k, v in params["files"].items()}
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if MANIFEST in files:
        module.fail_json(msg=f"{MANIFEST} is the module's own record and cannot be a tree file")
    git = Git(module, root)
    created = ensure_repository(module, git, root)
    if not module.check_mode and params["remote"] and params["push"] and not created:
        sync_with_remote(module, git)
    manifest_path = root / MANIFEST
    owned: dict[str, str] = json.loads(manifest_path.read_text())["files"] if manifest_path.exists() else {}
    actions = plan(root, files, owned)
    result: dict[str, Any] = {
        "changed": False,
        "added": actions["added"],
        "updated": actions["updated"],
        "removed": actions["removed"],
        "pushed": False,
        "files": len(files),
    }
    if actions["conflicts"]:
        git.cleanup()
        module.fail_json(
            msg="the GitOps working copy has changes homelab-bootstrap would overwrite; nothing was written. "
            "Move your change into a file of your own (e.g. a kustomize overlay or a setting in the inventory), "
            "or delete the file to have it regenerated:\n" + "\n".join(f"  - {c}" for c in actions["conflicts"]),
            conflicts=actions["conflicts"],
        )
    if module._diff:
        result["diff"] = diffs(root, files, actions)
    touched = actions["added"] + actions["updated"] + actions["removed"]
    if module.check_mode:
        result["changed"] = bool(touched) or created
        module.exit_json(**result)
    write_files(root, files, actions)
    new_manifest = json.dumps(
        {"generator": "homelab-bootstrap", "files": {rel: sha256(files[rel].encode()) for rel in sorted(files)}},
        indent=1,
        sort_keys=True,
    )
    if not manifest_path.exists() or manifest_path.read_text() != new_manifest + "\n":
        manifest_path.write_text(new_manifest + "\n")
    tracked = set(git.run("ls-files", "-z")[1].split("\0"))
    gone = [rel for rel in actions["removed"] if rel in tracked]
    sha = commit(module, git, actions, sorted(set(files) | set(gone) | {MANIFEST}))
    result["changed"] = bool(touched) or created or sha is not None
    if sha:
        result["commit"] = sha
    if params["remote"] and params["push"] and needs_push(git, params["branch"]):
        git.run("push", "--quiet", "origin", f"HEAD:refs/heads/{params['branch']}")
        git.run("fetch", "--quiet", "origin", check=False)
        result["pushed"] = result["changed"] = True
    git.cleanup()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
