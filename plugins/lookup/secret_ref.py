# Lookup homelab.bootstrap.secret_ref: the value behind a homelab_secret_refs entry, on the controller.
"""Resolve "env:VARIABLE" / "file:/path" secret references (see plugins/module_utils/secret_refs.py)."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.lookup import LookupBase

from ansible_collections.homelab.bootstrap.plugins.module_utils.secret_refs import (
    SecretRefError,
    describe_source,
    resolve,
)

DOCUMENTATION = r"""
name: secret_ref
author: homelab-bootstrap maintainers
short_description: The secret behind a homelab_secret_refs reference
description:
  - Reads the environment variable (C(env:VARIABLE)) or the file (C(file:/path)) a reference names, on the
    controller. Use the result only in tasks with C(no_log).
options:
  _terms:
    description: References, each C(env:VARIABLE) or C(file:/absolute/path).
    required: true
  name:
    description: The reference's key in homelab_secret_refs, for messages.
    type: str
    default: secret
  missing:
    description: What an unset variable or a missing file gives, C(error) (fail naming the source) or C(empty).
    type: str
    default: error
    choices: [error, empty]
  strip:
    description: Drop trailing line breaks.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Create a Secret from a referenced token
  kubernetes.core.k8s:
    definition:
      apiVersion: v1
      kind: Secret
      metadata: {name: token, namespace: default}
      stringData:
        token: "{{ lookup('homelab.bootstrap.secret_ref', homelab_secret_refs.api_token, name='api_token') }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One value per reference (empty for a missing source with missing=empty).
  type: list
  elements: str
"""


class LookupModule(LookupBase):
    """Resolve secret references on the controller."""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        name, missing, strip = _options(kwargs)
        values: list[str] = []
        for ref in terms:
            try:
                value = resolve(ref, name, environ=os.environ, strip=strip)
                if value is None and missing == "error":
                    raise SecretRefError(
                        f"homelab_secret_refs.{name}: {describe_source(ref, name)} is not set or empty; "
                        "provide the secret there and rerun"
                    )
            except SecretRefError as exc:
                raise AnsibleLookupError(str(exc)) from None
            values.append(value or "")
        return values


def _options(kwargs: dict[str, Any]) -> tuple[str, str, bool]:
    """The documented options, checked here so the plugin also works outside a playbook run."""
    unknown = sorted(set(kwargs) - {"name", "missing", "strip"})
    if unknown:
        raise AnsibleLookupError(f"secret_ref: unknown option(s) {', '.join(unknown)}")
    missing = str(kwargs.get("missing", "error"))
    if missing not in ("error", "empty"):
        raise AnsibleLookupError(f"secret_ref: missing must be error or empty, not {missing!r}")
    return str(kwargs.get("name", "secret")), missing, boolean(kwargs.get("strip", True), strict=True)
