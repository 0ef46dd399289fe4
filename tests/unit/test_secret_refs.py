# Secret references resolved on the controller: the module_utils functions and the lookup plugin.
from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.homelab.bootstrap.plugins.lookup.secret_ref import LookupModule
from ansible_collections.homelab.bootstrap.plugins.module_utils.secret_refs import (
    SecretRefError,
    describe_source,
    parse_ref,
    resolve,
)


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("env:GITOPS_TOKEN", ("env", "GITOPS_TOKEN")),
        ("file:/run/secrets/token", ("file", "/run/secrets/token")),
    ],
)
def test_parse_ref(ref: str, parsed: tuple[str, str]) -> None:
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["hunter2-very-secret", "env:", "file:relative/path", "vault:x", 42, None])
def test_parse_ref_rejects_non_references_without_echoing_them(ref: object) -> None:
    with pytest.raises(SecretRefError) as caught:
        parse_ref(ref, "gitops_repo_password")
    assert "homelab_secret_refs.gitops_repo_password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"TOKEN": "s3cr3t"}, "s3cr3t"),
        ({"TOKEN": "s3cr3t\n"}, "s3cr3t"),
        ({"TOKEN": ""}, None),
        ({}, None),
    ],
)
def test_resolve_env(environ: dict[str, str], expected: str | None) -> None:
    assert resolve("env:TOKEN", environ=environ) == expected


def test_resolve_file_strips_line_breaks_unless_told(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    assert resolve(f"file:{key}") == "-----BEGIN KEY-----\nabc\n-----END KEY-----"
    assert resolve(f"file:{key}", strip=False) == key.read_text()


def test_resolve_missing_file_is_none(tmp_path: Path) -> None:
    assert resolve(f"file:{tmp_path}/nope") is None


def test_resolve_unreadable_file_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(SecretRefError, match=r"homelab_secret_refs\.tok: cannot read"):
        resolve(f"file:{tmp_path}", "tok")  # a directory


def test_describe_source() -> None:
    assert describe_source("env:X") == "environment variable X"
    assert describe_source("file:/a/b") == "file /a/b"


def lookup(*terms: str, **options: object) -> list[str]:
    return LookupModule().run(list(terms), variables={}, **options)


def test_lookup_returns_the_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOMELAB_TEST_TOKEN", "tok\n")
    (tmp_path / "pw").write_text("pw\n")
    assert lookup("env:HOMELAB_TEST_TOKEN", f"file:{tmp_path}/pw") == ["tok", "pw"]


def test_lookup_fails_naming_the_source_of_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMELAB_TEST_UNSET", raising=False)
    with pytest.raises(AnsibleLookupError, match="secret_store_token: environment variable HOMELAB_TEST_UNSET"):
        lookup("env:HOMELAB_TEST_UNSET", name="secret_store_token")


def test_lookup_missing_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMELAB_TEST_UNSET", raising=False)
    assert lookup("env:HOMELAB_TEST_UNSET", missing="empty") == [""]


def test_lookup_never_echoes_an_inline_secret() -> None:
    with pytest.raises(AnsibleLookupError) as caught:
        lookup("correct-horse-battery-staple", name="gitops_repo_password")
    assert "correct-horse" not in str(caught.value)


def test_lookup_rejects_unknown_options() -> None:
    with pytest.raises(AnsibleLookupError, match="unknown option"):
        lookup("env:X", mising="empty")
