# tools/dry_run_tree.py: the parts that need no API server (the lab e2e test runs the whole tool).
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_script

dry = load_script("dry_run_tree", REPO / "tools" / "dry_run_tree.py")
SCHEMAS = REPO.parent / "shared" / "crd-schemas"


def test_strict_json_schema_becomes_structural() -> None:
    schema = {
        "$schema": "http://json-schema.org/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "spec": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}},
                "readOnly": True,
            }
        },
    }
    out = dry.structural(schema)
    assert out == {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "nullable": True,
                "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}},
            }
        },
    }


@pytest.mark.parametrize(
    ("kind", "plural"),
    [("ClusterIssuer", "clusterissuers"), ("Policy", "policies"), ("Gateway", "gateways"), ("Ingress", "ingresses")],
)
def test_plural(kind: str, plural: str) -> None:
    assert dry.plural_of(kind) == plural


def test_crd_from_a_shared_schema() -> None:
    path = SCHEMAS / "cert-manager.io" / "clusterissuer_v1.json"
    crd = dry.crd_from_schema("cert-manager.io", "v1", "ClusterIssuer", json.loads(path.read_text()), False)
    assert crd["metadata"]["name"] == "clusterissuers.cert-manager.io"
    assert crd["spec"]["scope"] == "Cluster"
    top = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert top["properties"]["metadata"] == {"type": "object"}
    assert "additionalProperties" not in json.dumps(top).replace('"additionalProperties": {', "")
    assert "spec" in top["properties"]


def test_custom_kinds_and_their_scope() -> None:
    docs = [
        ("a", "ns", {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "x"}}),
        ("a", "ns", {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"namespace": "n"}}),
        ("a", "ns", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "n"}}),
        ("a", "ns", {"apiVersion": "v1", "kind": "Service", "metadata": {}}),
    ]
    assert dry.custom_kinds(docs) == {
        ("cert-manager.io", "v1", "ClusterIssuer"): False,
        ("cert-manager.io", "v1", "Certificate"): True,
    }
