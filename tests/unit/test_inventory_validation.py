# Table-driven tests of the validator's rules on in-memory inventories (no Ansible run).
from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.homelab.bootstrap.plugins.module_utils.inventory_validation import (
    load_schema,
    user_settings,
    validate,
)
from tests.conftest import REPO

SCHEMA = load_schema(REPO / "roles")

BASE_VARS: dict[str, Any] = {
    "cluster_node_cidr": "192.168.10.0/24",
    "cluster_api_vip": "192.168.10.10",
    "cluster_api_dns_name": "api.example.com",
    "homelab_domain": "example.com",
    "nas_address": "nas.example.com",
    "homelab_components": {"cilium": True},
    "ansible_user": "admin",
}
GROUPS = {"k8s_cluster": ["cp1", "w1"], "control_plane": ["cp1"], "workers": ["w1"]}


def hostvars(**overrides: Any) -> dict[str, dict[str, Any]]:
    shared = {**BASE_VARS, **overrides}
    return {
        "cp1": {**copy.deepcopy(shared), "ansible_host": "192.168.10.11"},
        "w1": {**copy.deepcopy(shared), "ansible_host": "192.168.10.21"},
    }


def test_minimal_inventory_is_valid() -> None:
    assert validate(GROUPS, hostvars(), SCHEMA) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"cluster_service_cidr": "10.0.0.0/8"}, "too large"),
        ({"cluster_node_pod_mask": 16}, "must be longer than"),
        ({"metallb_pool": ["192.168.10.250-192.168.10.240"]}, "must not exceed the last"),
        ({"metallb_pool": ["192.168.10.100/30", "192.168.10.101-192.168.10.110"]}, "overlap"),
        ({"gitops_repo_url": "not a url"}, "is not a Git URL"),
        ({"gitops_repo_branch": "feature..x"}, "is not a valid branch name"),
        ({"nas_exports": {"media": "relative/path", "backup": "/b"}}, "nas_exports.media"),
        ({"homelab_components": {"velero": True}, "nas_address": ""}, "nas_address is not set"),
        ({"homelab_secret_refs": {"cloudfare_api_token": "env:X"}}, "did you mean 'cloudflare_api_token'"),
        ({"kubernetes_version": 1.37}, "kubernetes_version must be a string"),
    ],
)
def test_rule(overrides: dict[str, Any], expected: str) -> None:
    problems = validate(GROUPS, hostvars(**overrides), SCHEMA)
    assert any(expected in p for p in problems), problems


def test_secret_values_are_never_echoed() -> None:
    problems = validate(GROUPS, hostvars(homelab_secret_refs={"secret_store_token": "hunter2-very-secret"}), SCHEMA)
    assert problems and not any("hunter2" in p for p in problems)


def test_user_settings_drops_ansible_variables() -> None:
    assert user_settings({"ansible_host": "x", "groups": {}, "omit": "o", "node_ip": "1"}) == {"node_ip": "1"}


def test_schema_knows_every_role_option() -> None:
    assert "kubernetes_version" in SCHEMA.options
    assert "node_ip" not in SCHEMA.cluster_options
    assert "cluster_pod_cidr" in SCHEMA.cluster_options
