# Documentation stub for the validate_inventory action plugin (the logic runs on the controller).
"""Validate the homelab inventory before any host is touched."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: validate_inventory
short_description: Validate the homelab inventory before any host is touched
description:
  - Runs on the controller and reads the inventory only; it never connects to a host.
  - Checks groups (control_plane, workers under k8s_cluster, an odd number of control planes),
    node names and IPs, the API VIP, pod/service/node/MetalLB ranges, the Kubernetes version,
    domains, component and app toggles and secret references.
  - Rejects every variable that no role of this collection accepts, with a suggestion for
    likely misspellings, and variables that look like inline secrets.
  - Fails with one line per problem saying what to change.
version_added: "0.1.0"
options:
  roles_dir:
    description: Directory holding the roles whose meta/argument_specs.yml define the accepted settings.
    type: path
    required: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - homelab-bootstrap maintainers
"""

EXAMPLES = r"""
- name: Validate the inventory
  homelab.bootstrap.validate_inventory:
"""

RETURN = r"""
problems:
  description: Empty when the inventory is valid (problems are listed in msg on failure).
  returned: success
  type: list
  elements: str
hosts:
  description: Number of hosts in k8s_cluster.
  returned: always
  type: int
"""
