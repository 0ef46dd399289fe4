# The app directories of the GitOps tree (cluster/apps/<area>/<app>/), generated from the app catalog.
"""Generate every enabled app's manifests from its catalog entry (roles/gitops/vars/main/apps.yml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def generate(
    apps: Mapping[str, Mapping[str, Any]], entries: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, str]:
    """Files of the enabled apps, keyed by their path in the tree."""
    return {}
