# Secret references (homelab_secret_refs): where a secret comes from on the controller, resolved.
"""Resolve "env:VARIABLE" / "file:/path" secret references to their values.

The inventory holds only references (validated by the preflight rules in
inventory_validation); this is the one place that turns a reference into the secret itself.
Messages name the reference and its source, never a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ansible_collections.homelab.bootstrap.plugins.module_utils.inventory_validation import SECRET_REF_RE


class SecretRefError(ValueError):
    """A reference that is malformed, or whose source does not hold a value."""


def parse_ref(ref: object, name: str = "secret") -> tuple[str, str]:
    """("env", VARIABLE) or ("file", /path) for a valid reference."""
    if not isinstance(ref, str) or not SECRET_REF_RE.match(ref):
        # Never echo `ref`: a misplaced secret value would land in the output.
        raise SecretRefError(f'homelab_secret_refs.{name} is not a reference: write "env:VARIABLE" or "file:/path"')
    kind, _, source = ref.partition(":")
    return kind, source


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def resolve(
    ref: object,
    name: str = "secret",
    environ: Mapping[str, str] | None = None,
    read: Callable[[str], str] = _read_text,
    strip: bool = True,
) -> str | None:
    """The secret a reference points at; None when its variable is unset or empty or its file missing.

    `strip` drops trailing line breaks, which files written by editors and `pass` end with.
    """
    kind, source = parse_ref(ref, name)
    if kind == "env":
        value = (environ if environ is not None else {}).get(source, "")
    else:
        try:
            value = read(source)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretRefError(f"homelab_secret_refs.{name}: cannot read {source}: {exc.strerror}") from exc
    if strip:
        value = value.rstrip("\r\n")
    return value or None


def describe_source(ref: object, name: str = "secret") -> str:
    """Where a reference looks, for messages: 'environment variable X' or 'file /p'."""
    kind, source = parse_ref(ref, name)
    return f"environment variable {source}" if kind == "env" else f"file {source}"
