# Inventory validation: the rules the preflight playbook applies before any host is touched.
"""Validate a homelab inventory (groups + per-host variables) against the role interfaces.

Pure functions: the action plugin ``homelab.bootstrap.validate_inventory`` collects the
inventory and calls :func:`validate`; the unit tests call it directly. Every error is one
line that names the setting (and host where it matters) and says what to change. Secret
values are never echoed back.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Kubernetes minors this release of the collection installs and tests. kubeadm, the kubelet
# flags, the configuration API (v1beta4) and the image versions are tied to them.
SUPPORTED_KUBERNETES_MINORS = ("1.37",)
CONTROL_PLANE_COUNTS = (1, 3, 5, 7)
REQUIRED_GROUPS = ("k8s_cluster", "control_plane", "workers")

# Secret references each enabled component needs; the values live outside the inventory.
REQUIRED_SECRET_REFS: dict[str, tuple[str, ...]] = {
    "cloudflare_api_token": ("cert_manager", "external_dns"),
    "s3_access_key_id": ("velero", "cloudnative_pg"),
    "s3_secret_access_key": ("velero", "cloudnative_pg"),
    "secret_store_token": ("external_secrets",),
}
OPTIONAL_SECRET_REFS = ("gitops_repo_password", "gitops_repo_ssh_key")
SECRET_REF_RE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/\S+)$")
SECRET_NAME_RE = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|cert(ificate)?_key)", re.I)

# Settings that describe one node; everything else from cluster_defaults is cluster-wide and
# must be identical on every host.
PER_NODE_SETTINGS = frozenset({"node_ip", "node_labels", "node_taints"})

LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
GIT_URL_RE = re.compile(r"^((https?|ssh|git|file)://\S+|[\w.-]+@[\w.-]+:\S+)$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
VAULT_URL_RE = re.compile(r"^https?://[^/\s@]+(/\S*)?$")
S3_ENDPOINT_RE = re.compile(r"^https?://[^/\s@]+(/\S*)?$")
BRANCH_RE = re.compile(r"^(?!/|.*\.\.|.*//|.*@\{|.*\.lock$|.*/$)[A-Za-z0-9._/-]+$")

# Variables Ansible itself puts into hostvars; they are not user settings.
ANSIBLE_MAGIC = frozenset(
    {
        "ansible_check_mode",
        "ansible_config_file",
        "ansible_diff_mode",
        "ansible_forks",
        "ansible_inventory_sources",
        "ansible_playbook_python",
        "ansible_run_tags",
        "ansible_skip_tags",
        "ansible_verbosity",
        "ansible_version",
        "group_names",
        "groups",
        "hostvars",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "play_hosts",
        "playbook_dir",
        "role_names",
    }
)


@dataclass(frozen=True)
class Schema:
    """What the roles accept: option specs by name, and the role defaults."""

    options: Mapping[str, Mapping[str, Any]]
    defaults: Mapping[str, Any]
    cluster_options: frozenset[str] = field(default_factory=frozenset)


def load_schema(roles_dir: Path) -> Schema:
    """Read every role's meta/argument_specs.yml and defaults/ into one schema."""
    options: dict[str, Mapping[str, Any]] = {}
    defaults: dict[str, Any] = {}
    cluster_options: set[str] = set()
    for spec_file in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        role = spec_file.parent.parent
        specs = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        for entry in (specs.get("argument_specs") or {}).values():
            for name, spec in (entry.get("options") or {}).items():
                options.setdefault(name, spec)
                if role.name == "cluster_defaults":
                    cluster_options.add(name)
        for defaults_file in sorted(role.glob("defaults/main*.yml")) + sorted(role.glob("defaults/main/*.yml")):
            defaults.update(yaml.safe_load(defaults_file.read_text(encoding="utf-8")) or {})
    return Schema(options, defaults, frozenset(cluster_options - PER_NODE_SETTINGS))


def node_address(host: str, host_vars: Mapping[str, Any]) -> str:
    """A node's cluster address: node_ip, else ansible_host, else its inventory name.

    The one place this fallback lives: other hosts' role defaults are not visible through
    hostvars, so roles that need every control plane's address use the node_addresses filter.
    """
    for name in ("node_ip", "ansible_host"):
        value = host_vars.get(name)
        if value:
            return str(value)
    return host


def user_settings(host_vars: Mapping[str, Any]) -> dict[str, Any]:
    """Drop what Ansible adds (magic and connection variables) from a host's variables."""
    return {
        name: value
        for name, value in host_vars.items()
        if name not in ANSIBLE_MAGIC and not name.startswith("ansible_")
    }


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _type_name(value: Any) -> str:
    """YAML-level type name (Ansible wraps values in tagged subclasses of the builtins)."""
    for kind in (bool, int, float, str, dict, list):
        if isinstance(value, kind):
            return kind.__name__
    return type(value).__name__


# Strings that mean a boolean (the first four true): an unquoted word in YAML, but a string when
# given as a key=value extra var.
BOOLEAN_WORDS = ("true", "yes", "on", "1", "false", "no", "off", "0")


def _wrong_type(name: str, value: Any, wanted: str) -> str:
    """The problem of a value of the wrong YAML type, saying how to write it right."""
    if wanted == "bool" and isinstance(value, str) and value.lower() in BOOLEAN_WORDS:
        word = "true" if value.lower() in BOOLEAN_WORDS[:4] else "false"
        return (
            f"{name} must be a boolean, not the string {value!r}: write {word} unquoted in the inventory, "
            f"or on the command line -e '{{\"{name}\": {word}}}' (a key=value extra var is always a string)"
        )
    if wanted == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'{name} must be a string: quote it ("{value}")'
    return f"{name} must be of type {wanted}, got {_type_name(value)}"


def _check_type(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """Check one value against its argument spec; return the problem or None."""
    if _is_template(value):
        return None
    wanted = spec.get("type", "raw")
    checks: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "bool": (bool,),
        "dict": (dict,),
        "list": (list,),
        "path": (str,),
    }
    types = checks.get(wanted)
    if types is not None:
        if wanted == "int" and isinstance(value, bool):
            return f"{name} must be an integer, not {value!r}"
        if not isinstance(value, types):
            return _wrong_type(name, value, wanted)
    choices = spec.get("choices")
    if choices and value not in choices:
        return f"{name} is {value!r}; choose one of: {', '.join(map(str, choices))}"
    return None


def _network(name: str, value: Any, errors: list[str]) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(str(value), strict=False)
            errors.append(f"{name} {value} has host bits set; did you mean {fixed}?")
        else:
            errors.append(f"{name} '{value}' is not a network in CIDR form (e.g. 10.0.0.0/16)")
    return None


def _address(name: str, value: Any, errors: list[str]) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        errors.append(f"{name} '{value}' is not an IP address")
    return None


def _pool_ranges(pool: Any, errors: list[str]) -> list[tuple[str, IPAddress, IPAddress]]:
    """Parse metallb_pool entries ("first-last" or CIDR) into address ranges."""
    ranges: list[tuple[str, IPAddress, IPAddress]] = []
    if not isinstance(pool, list):
        return ranges
    for entry in pool:
        text = str(entry).strip()
        if "-" in text:
            first_text, _, last_text = text.partition("-")
            try:
                first = ipaddress.ip_address(first_text.strip())
                last = ipaddress.ip_address(last_text.strip())
            except ValueError:
                errors.append(f"metallb_pool entry '{text}' is not 'first-last' IP addresses")
                continue
            if first.version != last.version or first > last:
                errors.append(f"metallb_pool entry '{text}': the first address must not exceed the last")
                continue
            ranges.append((text, first, last))
        else:
            net = _network(f"metallb_pool entry '{text}'", text, errors)
            if net is not None:
                ranges.append((text, net.network_address, net.broadcast_address))
    return ranges


def _range_overlaps_net(first: IPAddress, last: IPAddress, net: IPNetwork) -> bool:
    if first.version != net.version:
        return False
    return not (last < net.network_address or first > net.broadcast_address)


def _is_fqdn(name: Any, min_labels: int = 2) -> bool:
    if not isinstance(name, str) or len(name) > 253:
        return False
    labels = name.rstrip(".").split(".")
    if len(labels) < min_labels:
        return False
    if not all(LABEL_RE.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()


def _check_groups(groups: Mapping[str, list[str]], errors: list[str]) -> None:
    for group in REQUIRED_GROUPS:
        if group not in groups:
            errors.append(
                f"inventory has no '{group}' group: define control_plane and workers as "
                "children of k8s_cluster (see inventory/example/hosts.yml)"
            )
    control_planes = groups.get("control_plane", [])
    if "control_plane" in groups and len(control_planes) not in CONTROL_PLANE_COUNTS:
        errors.append(
            f"control_plane has {len(control_planes)} hosts; etcd quorum needs an odd number: "
            f"use one of {', '.join(map(str, CONTROL_PLANE_COUNTS))}"
        )
    cluster = set(groups.get("k8s_cluster", []))
    for group in ("control_plane", "workers"):
        outside = sorted(set(groups.get(group, [])) - cluster)
        if outside:
            errors.append(
                f"hosts {', '.join(outside)} are in {group} but not in k8s_cluster: "
                f"make {group} a child group of k8s_cluster"
            )
    both = sorted(set(control_planes) & set(groups.get("workers", [])))
    if both:
        errors.append(
            f"hosts {', '.join(both)} are in both control_plane and workers: list each node in "
            "one of them (control planes run workloads too with kubeadm_control_plane_taints: [])"
        )
    stray = sorted(cluster - set(control_planes) - set(groups.get("workers", [])))
    if stray:
        errors.append(f"hosts {', '.join(stray)} are in k8s_cluster but neither in control_plane nor workers")


def _check_names(hosts: Iterable[str], errors: list[str]) -> None:
    seen: dict[str, str] = {}
    for host in hosts:
        if not _is_fqdn(host, min_labels=1):
            errors.append(
                f"host name '{host}' is not a valid Kubernetes node name (RFC 1123: lowercase "
                "letters, digits, '-' and '.', each label at most 63 characters)"
            )
        key = host.lower()
        if key in seen:
            errors.append(f"host names '{seen[key]}' and '{host}' name the same node")
        seen[key] = host


def _check_unknown(hosts_settings: Mapping[str, Mapping[str, Any]], schema: Schema, errors: list[str]) -> None:
    """Misspelled or unknown settings, and secrets written inline into the inventory."""
    unknown: dict[str, list[str]] = {}
    inline_secrets: dict[str, list[str]] = {}
    for host, settings in hosts_settings.items():
        for name, value in settings.items():
            if name in schema.options:
                continue
            if SECRET_NAME_RE.search(name) and value not in (None, "", {}, []):
                inline_secrets.setdefault(name, []).append(host)
            else:
                unknown.setdefault(name, []).append(host)
    for name, where in sorted(inline_secrets.items()):
        errors.append(
            f"{name} looks like a secret value in the inventory ({_hosts_text(where, hosts_settings)}): "
            "remove it and reference the secret instead in homelab_secret_refs "
            '("env:VARIABLE" or "file:/path")'
        )
    for name, where in sorted(unknown.items()):
        errors.append(
            f"unknown setting '{name}' ({_hosts_text(where, hosts_settings)}){_suggest(name, schema.options)}: "
            "fix the spelling or remove it"
        )


def _hosts_text(where: list[str], all_hosts: Mapping[str, Any]) -> str:
    if len(where) == len(all_hosts):
        return "set for all hosts"
    shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
    return f"set for {shown}"


def _check_types(hosts_settings: Mapping[str, Mapping[str, Any]], schema: Schema, errors: list[str]) -> None:
    reported: set[str] = set()
    for host, settings in hosts_settings.items():
        for name, value in settings.items():
            spec = schema.options.get(name)
            if spec is None:
                continue
            problem = _check_type(name, value, spec)
            if problem and problem not in reported:
                reported.add(problem)
                errors.append(problem if name not in PER_NODE_SETTINGS else f"host {host}: {problem}")


def _cluster_settings(
    hosts_settings: Mapping[str, Mapping[str, Any]], schema: Schema, errors: list[str]
) -> dict[str, Any]:
    """Merge defaults with the inventory; a cluster-wide setting must agree on every host."""
    merged = dict(schema.defaults)
    for name in sorted(schema.cluster_options):
        values: dict[str, Any] = {}
        for host, settings in hosts_settings.items():
            if name in settings:
                values[host] = settings[name]
        if not values:
            continue
        distinct = {repr(v) for v in values.values()}
        if len(distinct) > 1 or len(values) != len(hosts_settings):
            errors.append(
                f"{name} is cluster-wide but differs between hosts ({', '.join(sorted(values))} "
                "set it differently from the rest): set it once in group_vars/all or k8s_cluster"
            )
        merged[name] = next(iter(values.values()))
    return merged


def _check_version(settings: Mapping[str, Any], errors: list[str]) -> None:
    version = str(settings.get("kubernetes_version", ""))
    match = VERSION_RE.match(version)
    if not match:
        hint = " without the leading 'v'" if version.startswith("v") else ""
        errors.append(f"kubernetes_version '{version}' is not of the form x.y.z: write e.g. 1.37.2{hint}")
        return
    minor = f"{match.group(1)}.{match.group(2)}"
    if minor not in SUPPORTED_KUBERNETES_MINORS:
        errors.append(
            f"kubernetes_version {version} is not supported by this release: use a "
            f"{' or '.join(m + '.x' for m in SUPPORTED_KUBERNETES_MINORS)} version"
        )


def _node_ips(
    hosts_settings: Mapping[str, Mapping[str, Any]],
    raw_hostvars: Mapping[str, Mapping[str, Any]],
    errors: list[str],
) -> dict[str, IPAddress]:
    ips: dict[str, IPAddress] = {}
    for host in hosts_settings:
        value = node_address(host, {**raw_hostvars[host], **hosts_settings[host]})
        if _is_template(value):
            continue
        try:
            ips[host] = ipaddress.ip_address(str(value))
        except ValueError:
            errors.append(
                f"host {host}: node IP '{value}' is not an IP address: set node_ip (or ansible_host) "
                "to the node's address in cluster_node_cidr"
            )
    owners: dict[IPAddress, str] = {}
    for host, ip in ips.items():
        if ip in owners:
            errors.append(f"hosts {owners[ip]} and {host} have the same node IP {ip}: each node needs its own")
        owners.setdefault(ip, host)
    return ips


def _check_networks(settings: Mapping[str, Any], ips: Mapping[str, IPAddress], errors: list[str]) -> None:
    node_net = None
    if not settings.get("cluster_node_cidr"):
        errors.append("cluster_node_cidr is not set: set it to the subnet of your nodes (e.g. 192.168.10.0/24)")
    else:
        node_net = _network("cluster_node_cidr", settings["cluster_node_cidr"], errors)
    pod_net = _network("cluster_pod_cidr", settings.get("cluster_pod_cidr"), errors)
    svc_net = _network("cluster_service_cidr", settings.get("cluster_service_cidr"), errors)
    pool = _pool_ranges(settings.get("metallb_pool"), errors)

    if node_net is not None:
        for host, ip in sorted(ips.items()):
            if ip not in node_net:
                errors.append(f"host {host}: node IP {ip} is outside cluster_node_cidr {node_net}")

    named = [("cluster_pod_cidr", pod_net), ("cluster_service_cidr", svc_net), ("cluster_node_cidr", node_net)]
    for i, (name_a, net_a) in enumerate(named):
        for name_b, net_b in named[i + 1 :]:
            if net_a is not None and net_b is not None and net_a.overlaps(net_b):
                errors.append(f"{name_a} {net_a} overlaps {name_b} {net_b}: pick non-overlapping ranges")

    if svc_net is not None and svc_net.version == 4 and not 12 <= svc_net.prefixlen <= 24:
        size = "too small" if svc_net.prefixlen > 24 else "too large (kube-apiserver allows at most /12)"
        errors.append(f"cluster_service_cidr {svc_net} is {size}: use a prefix between /12 and /24")

    mask = settings.get("cluster_node_pod_mask")
    if pod_net is not None and isinstance(mask, int) and not isinstance(mask, bool):
        if mask <= pod_net.prefixlen or mask > pod_net.max_prefixlen:
            errors.append(f"cluster_node_pod_mask /{mask} must be longer than cluster_pod_cidr's /{pod_net.prefixlen}")
        elif 2 ** (mask - pod_net.prefixlen) < len(ips):
            errors.append(
                f"cluster_pod_cidr {pod_net} holds only {2 ** (mask - pod_net.prefixlen)} node subnets of "
                f"/{mask} for {len(ips)} nodes: use a larger pod CIDR or a longer cluster_node_pod_mask"
            )

    for text, first, last in pool:
        if node_net is not None and not (first in node_net and last in node_net):
            errors.append(
                f"metallb_pool range {text} is not inside cluster_node_cidr {node_net}: "
                "MetalLB's L2 mode answers ARP for addresses on the node subnet"
            )
        for name, net in (("cluster_pod_cidr", pod_net), ("cluster_service_cidr", svc_net)):
            if net is not None and _range_overlaps_net(first, last, net):
                errors.append(f"metallb_pool range {text} overlaps {name} {net}")
        inside = sorted((ip, host) for host, ip in ips.items() if ip.version == first.version and first <= ip <= last)
        if inside:
            listed = ", ".join(f"{ip} ({host})" for ip, host in inside)
            errors.append(f"metallb_pool range {text} contains node IPs {listed}: shrink the pool")
    for i, (text_a, first_a, last_a) in enumerate(pool):
        for text_b, first_b, last_b in pool[i + 1 :]:
            if first_a.version == first_b.version and not (last_a < first_b or last_b < first_a):
                errors.append(f"metallb_pool ranges {text_a} and {text_b} overlap")

    _check_vip(settings, node_net, pool, ips, errors)


def _check_vip(
    settings: Mapping[str, Any],
    node_net: IPNetwork | None,
    pool: list[tuple[str, IPAddress, IPAddress]],
    ips: Mapping[str, IPAddress],
    errors: list[str],
) -> None:
    if not settings.get("cluster_api_vip"):
        errors.append("cluster_api_vip is not set: choose a free address in cluster_node_cidr for the API")
        return
    vip = _address("cluster_api_vip", settings["cluster_api_vip"], errors)
    if vip is None:
        return
    for host, ip in sorted(ips.items()):
        if ip == vip:
            errors.append(f"cluster_api_vip {vip} is the node IP of {host}: choose an unused address")
    if node_net is not None:
        if vip not in node_net:
            errors.append(
                f"cluster_api_vip {vip} is outside cluster_node_cidr {node_net}: VRRP needs it on the node subnet"
            )
        elif vip in (node_net.network_address, node_net.broadcast_address) and node_net.prefixlen < 31:
            errors.append(f"cluster_api_vip {vip} is the network or broadcast address of {node_net}")
    for text, first, last in pool:
        if vip.version == first.version and first <= vip <= last:
            errors.append(f"cluster_api_vip {vip} is inside metallb_pool range {text}: move one of them")
    api_port = settings.get("cluster_api_port")
    if settings.get("cluster_vip_provider") == "keepalived" and api_port == settings.get("cluster_apiserver_port"):
        errors.append(
            f"cluster_api_port and cluster_apiserver_port are both {api_port}: HAProxy runs beside "
            "kube-apiserver on the control planes, so give the VIP port another value (e.g. 8443)"
        )
    if not settings.get("cluster_api_dns_name"):
        errors.append("cluster_api_dns_name is not set: give the API a DNS name that resolves to cluster_api_vip")
    elif not _is_template(settings["cluster_api_dns_name"]) and not _is_fqdn(settings["cluster_api_dns_name"]):
        errors.append(f"cluster_api_dns_name '{settings['cluster_api_dns_name']}' is not a valid DNS name")


def _check_toggles(settings: Mapping[str, Any], schema: Schema, errors: list[str]) -> None:
    for name in ("homelab_components", "homelab_apps"):
        value = settings.get(name)
        known = schema.defaults.get(name) or {}
        if not isinstance(value, dict):
            continue
        for key, enabled in value.items():
            if key not in known:
                kind = "component" if name == "homelab_components" else "app"
                errors.append(f"unknown {kind} '{key}' in {name}{_suggest(str(key), known)}")
            elif not isinstance(enabled, bool):
                errors.append(f"{name}.{key} must be true or false, not {enabled!r}")


def _enabled(settings: Mapping[str, Any], component: str) -> bool:
    components = settings.get("homelab_components")
    return isinstance(components, dict) and components.get(component) is True


def _check_secrets(settings: Mapping[str, Any], errors: list[str]) -> None:
    refs = settings.get("homelab_secret_refs")
    if not isinstance(refs, dict):
        return
    known = [*REQUIRED_SECRET_REFS, *OPTIONAL_SECRET_REFS]
    for name, ref in refs.items():
        if name not in known:
            errors.append(f"unknown secret reference '{name}' in homelab_secret_refs{_suggest(str(name), known)}")
        elif not isinstance(ref, str) or not SECRET_REF_RE.match(ref):
            # Never echo the value: it may be the secret itself.
            errors.append(
                f'homelab_secret_refs.{name} is not a reference: write "env:VARIABLE" or '
                '"file:/absolute/path" and keep the secret itself out of the inventory'
            )
    for name, components in REQUIRED_SECRET_REFS.items():
        users = [c for c in components if _enabled(settings, c)]
        if users and not refs.get(name):
            errors.append(
                f"homelab_secret_refs.{name} is required by {', '.join(users)}: reference where the "
                'secret comes from ("env:VARIABLE" or "file:/path"), or disable the component'
            )


def _gitops_option(name: str, settings: Mapping[str, Any], hosts_settings: Mapping[str, Mapping[str, Any]]) -> Any:
    """A gitops role option: set in group_vars (not merged like cluster_defaults), else its default."""
    return next((s[name] for s in hosts_settings.values() if name in s), settings.get(name))


def _check_platform_services(
    settings: Mapping[str, Any], hosts_settings: Mapping[str, Mapping[str, Any]], errors: list[str]
) -> None:
    """The Let's Encrypt account address and the Vault server the GitOps tree points at."""
    if _enabled(settings, "cert_manager"):
        email = _gitops_option("gitops_acme_email", settings, hosts_settings)
        if not email:
            errors.append(
                "gitops_acme_email is not set: cert_manager's Let's Encrypt account needs a contact "
                "e-mail for expiry notices; set it or disable cert_manager"
            )
        elif not _is_template(email) and not EMAIL_RE.match(str(email)):
            errors.append(f"gitops_acme_email '{email}' is not an e-mail address")
    if _enabled(settings, "external_secrets"):
        url = _gitops_option("gitops_vault_url", settings, hosts_settings)
        if not url:
            errors.append(
                "gitops_vault_url is not set: external_secrets reads the tree's secrets from HashiCorp "
                "Vault; set its URL (e.g. https://vault.example.com:8200) or disable external_secrets"
            )
        elif re.match(r"^\w+://[^/]*@", str(url)):
            # Never echo the URL: the part before @ is a credential.
            errors.append(
                "gitops_vault_url contains credentials: remove them; the store signs in with the token "
                "from homelab_secret_refs.secret_store_token"
            )
        elif not _is_template(url) and not VAULT_URL_RE.match(str(url)):
            errors.append(f"gitops_vault_url '{url}' is not an http(s) URL (e.g. https://vault.example.com:8200)")


def _check_site(settings: Mapping[str, Any], errors: list[str]) -> None:
    domain = settings.get("homelab_domain")
    if not domain:
        errors.append("homelab_domain is not set: set the base DNS domain your apps are published under")
    elif not _is_template(domain) and not _is_fqdn(domain):
        errors.append(f"homelab_domain '{domain}' is not a valid domain name (e.g. example.com)")
    if _enabled(settings, "nas_storage") or _enabled(settings, "velero"):
        nas = settings.get("nas_address")
        if not nas:
            errors.append("nas_address is not set: the NAS storage classes and Velero need it, or disable them")
        elif not _is_template(nas) and not _is_fqdn(nas, min_labels=1):
            try:
                ipaddress.ip_address(str(nas))
            except ValueError:
                errors.append(f"nas_address '{nas}' is neither a host name nor an IP address")
    exports = settings.get("nas_exports")
    if isinstance(exports, dict):
        for key in ("media", "backup"):
            path = exports.get(key)
            if not isinstance(path, str) or not path.startswith("/"):
                errors.append(f"nas_exports.{key} must be an absolute export path on the NAS (e.g. /mnt/pool/{key})")
        for key in sorted(set(exports) - {"media", "backup"}):
            errors.append(f"unknown export '{key}' in nas_exports: only media and backup are used")
    url = settings.get("gitops_repo_url")
    with_credentials = isinstance(url, str) and re.match(r"^\w+://[^/@]*:[^/@]*@", url)
    if url and not with_credentials and not _is_template(url) and not GIT_URL_RE.match(str(url)):
        errors.append(
            f"gitops_repo_url '{url}' is not a Git URL: use https://host/path.git, ssh://... or git@host:path"
        )
    if with_credentials:
        errors.append(
            "gitops_repo_url contains credentials: remove them from the URL and reference them in "
            "homelab_secret_refs.gitops_repo_password"
        )
    branch = settings.get("gitops_repo_branch")
    if not isinstance(branch, str) or not BRANCH_RE.match(branch):
        errors.append(f"gitops_repo_branch '{branch}' is not a valid branch name")


def _check_backup_target(
    settings: Mapping[str, Any], hosts_settings: Mapping[str, Mapping[str, Any]], errors: list[str]
) -> None:
    """Postgres (Barman) and Velero write their backups to the NAS's S3 service."""
    users = [c for c in ("cloudnative_pg", "velero") if _enabled(settings, c)]
    if not users:
        return
    # A gitops role option, not a cluster_defaults one: read from the hosts (group_vars/all).
    name = "gitops_backup_s3_endpoint"
    endpoint = next((s[name] for s in hosts_settings.values() if name in s), settings.get(name))
    if not endpoint:
        errors.append(
            f"gitops_backup_s3_endpoint is not set: {', '.join(users)} back up to the NAS's S3 service; "
            "set its URL (e.g. http://192.168.10.5:9000) or disable them"
        )
    elif not _is_template(endpoint) and not S3_ENDPOINT_RE.match(str(endpoint)):
        errors.append(
            f"gitops_backup_s3_endpoint '{endpoint}' is not an http(s) URL without credentials "
            "(e.g. https://nas.example.com:9000)"
        )


def _check_node_labels(hosts_settings: Mapping[str, Mapping[str, Any]], errors: list[str]) -> None:
    for host, settings in hosts_settings.items():
        labels = settings.get("node_labels", {})
        if isinstance(labels, dict):
            for key, value in labels.items():
                prefix, _, name = str(key).rpartition("/")
                if (prefix and not _is_fqdn(prefix, min_labels=1)) or not LABEL_NAME_RE.match(name):
                    errors.append(f"host {host}: node label key '{key}' is not a valid Kubernetes label key")
                if not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
                    errors.append(
                        f"host {host}: node label {key}={value!r} needs a string value of at most 63 "
                        'characters (quote "true")'
                    )
        taints = settings.get("node_taints", [])
        if isinstance(taints, list):
            for taint in taints:
                if not isinstance(taint, dict) or "key" not in taint:
                    errors.append(f"host {host}: each node_taints item needs key, optional value, and effect")
                    continue
                if taint.get("effect") not in TAINT_EFFECTS:
                    errors.append(
                        f"host {host}: taint {taint.get('key')} has effect {taint.get('effect')!r}; "
                        f"use one of {', '.join(TAINT_EFFECTS)}"
                    )


# A Go time.Duration as ArgoCD parses it: whole units, largest first (180s, 3m, 1h30m).
GO_DURATION_RE = re.compile(r"(?:\d+h)?(?:\d+m)?(?:\d+s)?(?<=[hms])")


def _check_bootstrap(
    settings: Mapping[str, Any],
    groups: Mapping[str, list[str]],
    hosts_settings: Mapping[str, Mapping[str, Any]],
    errors: list[str],
) -> None:
    """What the cni and argocd phases need from the cluster's shape."""
    pod_cidr = settings.get("cluster_pod_cidr")
    if _enabled(settings, "cilium") and isinstance(pod_cidr, str) and ":" in pod_cidr:
        errors.append(
            f"cluster_pod_cidr {pod_cidr} is IPv6, but cilium_values hands it to Cilium's IPv4 cluster pool: "
            "use an IPv4 pod CIDR"
        )
    for name in ("argocd_reconciliation_timeout", "argocd_reconciliation_jitter"):
        value = settings.get(name)
        if _enabled(settings, "argocd") and isinstance(value, str) and not GO_DURATION_RE.fullmatch(value):
            errors.append(f"{name} {value!r} is not a duration ArgoCD reads: write it like 120s, 3m or 1m30s")
    if not _enabled(settings, "argocd") or settings.get("argocd_install_variant") != "ha":
        return
    workers = len(groups.get("workers", []))
    control_planes = groups.get("control_plane", [])
    # Control planes run workloads only without their taint (kubeadm_control_plane_taints: []).
    untainted = [h for h in control_planes if hosts_settings.get(h, {}).get("kubeadm_control_plane_taints") == []]
    if workers + len(untainted) < 3:
        errors.append(
            f"argocd_install_variant ha spreads Redis HA over three nodes that run workloads, but this cluster "
            f"has {workers + len(untainted)}: add workers or use argocd_install_variant standard"
        )


def validate(
    groups: Mapping[str, list[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
    schema: Schema,
) -> list[str]:
    """Return every problem found in the inventory; an empty list means it is valid."""
    errors: list[str] = []
    _check_groups(groups, errors)
    hosts = list(groups.get("k8s_cluster", []))
    if not hosts:
        if "k8s_cluster" in groups:
            errors.append("k8s_cluster has no hosts: add control-plane and worker nodes")
        return errors
    _check_names(hosts, errors)
    hosts_settings = {host: user_settings(hostvars.get(host, {})) for host in hosts}
    _check_unknown(hosts_settings, schema, errors)
    _check_types(hosts_settings, schema, errors)
    settings = _cluster_settings(hosts_settings, schema, errors)
    _check_version(settings, errors)
    _check_platform_services(settings, hosts_settings, errors)
    ips = _node_ips(hosts_settings, hostvars, errors)
    _check_networks(settings, ips, errors)
    _check_toggles(settings, schema, errors)
    _check_secrets(settings, errors)
    _check_site(settings, errors)
    _check_backup_target(settings, hosts_settings, errors)
    _check_bootstrap(settings, groups, hosts_settings, errors)
    _check_node_labels(hosts_settings, errors)
    return errors
