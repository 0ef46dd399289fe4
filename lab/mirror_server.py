"""Start, stop or inspect the lab's offline mirror: download files over HTTP plus an image registry."""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import node_images

LAB_DIR = Path(__file__).resolve().parent
SETTINGS_FILE = LAB_DIR / "node-container.yml"
MIRROR_IMAGE = "homelab-mirror:debian12"
BASE_FLAVOUR = node_images.FLAVOURS[0]
KEY_LABEL = "io.homelab.mirror.key"
REGISTRY_DATA = "/var/lib/docker-registry"
FILES_DIR = "/srv/mirror/files"
REGISTRY_CONFIG_PATH = "/etc/docker/registry/lab.yml"
# The lab's Git server (lab/git_http.py): the GitOps repository the gitops role pushes to and
# ArgoCD pulls from, over HTTP with a password, like a private repository on a forge.
GIT_ROOT = "/srv/git"
GIT_SERVER_SCRIPT = "/usr/local/lib/homelab/git_http.py"
GIT_PASSWORD_PATH = "/run/homelab/git-password"
GIT_REPOS = ("cluster.git",)
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@dataclass(frozen=True)
class Settings:
    """The network and mirror scalars of node-container.yml (the single source of the address scheme)."""

    network_name: str
    network_subnet: str
    network_gateway: str
    network_dynamic_range: str
    mirror_container: str
    mirror_ipv4_address: str
    mirror_http_port: int
    mirror_registry_port: int
    mirror_download_url: str
    mirror_image_url: str
    mirror_git_port: int

    @classmethod
    def load(cls, path: Path = SETTINGS_FILE) -> Settings:
        # The system python3 has no YAML parser; these keys are flat top-level scalars by contract.
        found: dict[str, str] = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^(network_\w+|mirror_\w+):\s*(\S+)\s*(#.*)?$", line)
            if match:
                found[match.group(1)] = match.group(2).strip("\"'")
        missing = [name for name in cls.__dataclass_fields__ if name not in found]
        if missing:
            sys.exit(f"mirror_server: {path} lacks the top-level scalars {', '.join(missing)}")
        settings = cls(
            network_name=found["network_name"],
            network_subnet=found["network_subnet"],
            network_gateway=found["network_gateway"],
            network_dynamic_range=found["network_dynamic_range"],
            mirror_container=found["mirror_container"],
            mirror_ipv4_address=found["mirror_ipv4_address"],
            mirror_http_port=int(found["mirror_http_port"]),
            mirror_registry_port=int(found["mirror_registry_port"]),
            mirror_git_port=int(found["mirror_git_port"]),
            mirror_download_url=found["mirror_download_url"],
            mirror_image_url=found["mirror_image_url"],
        )
        expected = {
            "mirror_download_url": f"http://{settings.mirror_ipv4_address}:{settings.mirror_http_port}",
            "mirror_image_url": f"http://{settings.mirror_ipv4_address}:{settings.mirror_registry_port}",
        }
        for name, url in expected.items():
            if getattr(settings, name) != url:
                sys.exit(f"mirror_server: {path}: {name} should be {url} (address and port above)")
        return settings


def log(message: str) -> None:
    print(f"mirror_server: {message}", flush=True)


def docker(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        sys.exit(f"mirror_server: `docker {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def cache_root() -> Path:
    return Path(os.environ.get("HOMELAB_CACHE") or Path.home() / ".cache" / "homelab-bootstrap")


def require_engine() -> None:
    if docker("info", "--format", "{{.ServerVersion}}", check=False).returncode != 0:
        sys.exit("mirror_server: the docker engine does not answer; run `make docker` (python3 lab/docker_engine.py)")


# --- network ---------------------------------------------------------------------------------


def subnet_holders(ip_addr_output: str, subnet: str) -> list[str]:
    """The interfaces of `ip -o -4 addr show` whose address lies in subnet."""
    network = ipaddress.ip_network(subnet)
    holders = []
    for line in ip_addr_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet" and ipaddress.ip_interface(fields[3]).network.overlaps(network):
            holders.append(fields[1])
    return holders


def stale_bridges(holders: list[str], network_ids: list[str]) -> tuple[list[str], list[str]]:
    """Split the interfaces holding the lab's subnet into docker bridges whose network no longer
    exists (left by an engine whose state was removed: safe to delete) and everything else."""
    stale, others = [], []
    for name in holders:
        if name.startswith("br-") and not any(net.startswith(name[3:]) for net in network_ids):
            stale.append(name)
        else:
            others.append(name)
    return stale, others


def rules_naming(iptables_save: str, interface: str) -> list[list[str]]:
    """The `-A` rules of `iptables -S` that name interface, as the arguments that delete them."""
    return [
        ["-D", *shlex.split(line)[1:]]
        for line in iptables_save.splitlines()
        if line.startswith("-A ") and interface in shlex.split(line)
    ]


def remove_rules_of(interface: str) -> None:
    """A vanished docker network's NAT and forwarding rules: the NAT rule masquerades the subnet's
    traffic on any other bridge, so the lab's etcd members would see each other as the gateway."""
    for table in ("nat", "filter"):
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False)
        for rule in rules_naming(listed.stdout, interface) if listed.returncode == 0 else []:
            subprocess.run(["iptables", "-t", table, *rule], check=True)


def clear_subnet(settings: Settings) -> None:
    """Before creating the lab network: nothing else on this machine may route its subnet. A
    bridge of a docker network that no longer exists would take the traffic to the mirror."""
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False)
    if addrs.returncode != 0:
        return  # no iproute2: docker reports a conflicting subnet it knows of itself
    ids = docker("network", "ls", "--no-trunc", "--quiet").stdout.split()
    stale, others = stale_bridges(subnet_holders(addrs.stdout, settings.network_subnet), ids)
    for name in stale:
        log(f"removing {name}: a bridge of a docker network that no longer exists holds {settings.network_subnet}")
        subprocess.run(["ip", "link", "delete", name], check=True)
        remove_rules_of(name)
    if others:
        sys.exit(
            f"mirror_server: {', '.join(others)} already use(s) {settings.network_subnet}, the lab network's "
            "subnet: remove that network or interface, or move the lab (mirror_ipv4_address and the lab "
            "inventory's addresses)"
        )


def ensure_network(settings: Settings) -> None:
    """Create homelab-lab exactly as lab/playbooks/create.yml does, or check that it matches."""
    found = docker("network", "inspect", "--format", "{{json .IPAM.Config}}", settings.network_name, check=False)
    if found.returncode == 0:
        subnets = [entry.get("Subnet") for entry in json.loads(found.stdout) or []]
        if settings.network_subnet not in subnets:
            sys.exit(
                f"mirror_server: network {settings.network_name} exists with subnet(s) {subnets}, "
                f"not {settings.network_subnet}; remove it (docker network rm {settings.network_name})"
            )
        return
    clear_subnet(settings)
    log(f"creating network {settings.network_name} ({settings.network_subnet})")
    docker(
        "network",
        "create",
        "--driver=bridge",
        f"--subnet={settings.network_subnet}",
        f"--gateway={settings.network_gateway}",
        f"--ip-range={settings.network_dynamic_range}",
        "--label=io.homelab.lab=network",
        settings.network_name,
    )


# --- image -----------------------------------------------------------------------------------


REGISTRY_CONFIG = f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {REGISTRY_DATA}
http:
  addr: :5000
"""


def mirror_dockerfile() -> str:
    # Debian's docker-registry is the CNCF distribution registry. Its packaged config demands
    # htpasswd logins, so the image gets an open one: the lab network is private to this host.
    config_lines = " ".join(f"'{line}'" for line in REGISTRY_CONFIG.splitlines())
    return "\n".join(
        [
            f"FROM {node_images.image_ref(BASE_FLAVOUR)}",
            "RUN apt-get update -q \\",
            " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry git \\",
            " && apt-get clean && rm -rf /var/lib/apt/lists/* \\",
            f" && printf '%s\\n' {config_lines} > {REGISTRY_CONFIG_PATH}",
            # No systemd here: two plain processes, so no capabilities are needed.
            "ENTRYPOINT []",
            "STOPSIGNAL SIGTERM",
            "",
        ]
    )


def ensure_mirror_image() -> None:
    # Keyed by its own recipe only, not by the node image it starts from: a rebuilt node image
    # must not restart the mirror under a running lab.
    dockerfile = mirror_dockerfile()
    key = hashlib.sha256(dockerfile.encode()).hexdigest()[:16]
    current = docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', MIRROR_IMAGE, check=False
    )
    if current.returncode == 0 and current.stdout.strip() == key:
        return
    node_images.ensure_image(BASE_FLAVOUR, force=False)
    log(f"building {MIRROR_IMAGE} (apt-get install docker-registry git)")
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    result = subprocess.run(
        ["docker", "build", "--quiet", "--label", f"{KEY_LABEL}={key}", "--tag", MIRROR_IMAGE, "-"],
        input=dockerfile,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"mirror_server: building {MIRROR_IMAGE} failed:\n{result.stdout}{result.stderr}")


# --- container -------------------------------------------------------------------------------


def git_password_file(cache: Path) -> Path:
    """The lab Git server's password, created once (random, mode 0600): the lab inventory's
    homelab_secret_refs.gitops_repo_password points at this file."""
    path = cache / "lab" / "git-server" / "password"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    return path


def run_args(settings: Settings, cache: Path) -> list[str]:
    files = cache / "mirror" / "files"
    registry = cache / "mirror-registry"
    git_root = cache / "lab" / "git-server" / "repos"
    files.mkdir(parents=True, exist_ok=True)
    registry.mkdir(parents=True, exist_ok=True)
    git_root.mkdir(parents=True, exist_ok=True)
    password = git_password_file(cache)
    http, reg, git = settings.mirror_http_port, settings.mirror_registry_port, settings.mirror_git_port
    repos = " ".join(f"--repo {name}" for name in GIT_REPOS)
    script = (
        f"python3 -m http.server --bind 0.0.0.0 --directory {FILES_DIR} {http} & "
        f"docker-registry serve {REGISTRY_CONFIG_PATH} & "
        f"python3 {GIT_SERVER_SCRIPT} --root {GIT_ROOT} --password-file {GIT_PASSWORD_PATH} --port {git} {repos} & "
        # Either one dying stops the container, and the restart policy brings both back.
        "wait -n; exit 1"
    )
    return [
        f"--network={settings.network_name}",
        f"--ip={settings.mirror_ipv4_address}",
        f"--hostname={settings.mirror_container}",
        # docker trusts plain-HTTP registries on 127.0.0.0/8 only: pushes go to localhost.
        f"--publish=127.0.0.1:{reg}:{reg}",
        f"--mount=type=bind,source={files},target={FILES_DIR},readonly",
        f"--mount=type=bind,source={registry},target={REGISTRY_DATA}",
        f"--mount=type=bind,source={git_root},target={GIT_ROOT}",
        f"--mount=type=bind,source={LAB_DIR / 'git_http.py'},target={GIT_SERVER_SCRIPT},readonly",
        f"--mount=type=bind,source={password},target={GIT_PASSWORD_PATH},readonly",
        f"--env=REGISTRY_HTTP_ADDR=0.0.0.0:{reg}",
        "--restart=unless-stopped",
        "--init",
        "--label=io.homelab.lab=mirror",
        MIRROR_IMAGE,
        "bash",
        "-c",
        script,
    ]


def container_state(name: str) -> dict[str, str] | None:
    found = docker(
        "container",
        "inspect",
        "--format",
        '{"status": "{{.State.Status}}", "config": "{{index .Config.Labels "io.homelab.mirror.config"}}", '
        '"image": "{{.Image}}"}',
        name,
        check=False,
    )
    return json.loads(found.stdout) if found.returncode == 0 else None


def ensure_container(settings: Settings, cache: Path) -> None:
    args = run_args(settings, cache)
    image_id = node_images.image_id(MIRROR_IMAGE) or ""
    config = hashlib.sha256(json.dumps([args, image_id]).encode()).hexdigest()[:16]
    state = container_state(settings.mirror_container)
    if state and state["config"] == config and state["status"] == "running":
        return
    if state:
        log(f"replacing {settings.mirror_container} ({state['status']}, settings changed: {state['config'] != config})")
        docker("rm", "--force", settings.mirror_container)
    # The mirror image this container replaced (if it was rebuilt) is unused now.
    docker("image", "prune", "--force", f"--filter=label={KEY_LABEL}", check=False)
    log(f"starting {settings.mirror_container} at {settings.mirror_ipv4_address}")
    docker(
        "run", "--detach", f"--name={settings.mirror_container}", f"--label=io.homelab.mirror.config={config}", *args
    )


def wait_until_serving(settings: Settings, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    address = settings.mirror_ipv4_address
    urls = [
        host_registry_url(settings) + "/v2/",
        f"http://{address}:{settings.mirror_http_port}/",
        f"http://{address}:{settings.mirror_git_port}/",
    ]
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(pending[0], timeout=2):
                pending.pop(0)
        except urllib.error.HTTPError as error:
            # The Git server answers 401 without credentials: it is up.
            if error.code != 401:
                raise
            pending.pop(0)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    if pending:
        logs = docker("logs", "--tail", "20", settings.mirror_container, check=False)
        sys.exit(f"mirror_server: {pending[0]} does not answer; container log:\n{logs.stdout}{logs.stderr}")


def host_registry_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.mirror_registry_port}"


# --- images ----------------------------------------------------------------------------------


def mirror_repo(ref: str) -> tuple[str, str]:
    """`registry.k8s.io/pause:3.10.2` -> (`registry.k8s.io/pause`, `3.10.2`): the upstream host stays
    the first path component, which is what containerd's override_path configuration expects."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        name, tag = ref, "latest"
    first = name.split("/", 1)[0]
    if "." not in first and ":" not in first and first != "localhost":
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    return name, tag


def archive_images(tarball: Path) -> list[tuple[str, str]]:
    """(image config digest, repo tag) of each image in a `docker save` archive, without loading it."""
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("manifest.json")
        if member is None:
            sys.exit(f"mirror_server: {tarball} has no manifest.json; is it a `docker save` archive?")
        manifest = json.load(member)
    images = []
    for entry in manifest:
        digest = "sha256:" + Path(entry["Config"]).name.removesuffix(".json").removeprefix("sha256:")
        for ref in entry.get("RepoTags") or []:
            images.append((digest, ref))
    return images


def registry_config_digest(settings: Settings, repo: str, tag: str) -> str | None:
    request = urllib.request.Request(
        f"{host_registry_url(settings)}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["config"]["digest"])
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    except (KeyError, ValueError):
        return None


def load_images(settings: Settings, cache: Path) -> None:
    """Push every archived image whose exact build (config digest) the registry does not hold yet."""
    archives = sorted((cache / "mirror" / "images").glob("*.tar"))
    pushed = current = 0
    for tarball in archives:
        images = archive_images(tarball)
        stale = [
            (digest, ref) for digest, ref in images if registry_config_digest(settings, *mirror_repo(ref)) != digest
        ]
        current += len(images) - len(stale)
        if not stale:
            continue
        docker("load", "--input", str(tarball))
        for _, ref in stale:
            repo, tag = mirror_repo(ref)
            target = f"localhost:{settings.mirror_registry_port}/{repo}:{tag}"
            log(f"pushing {ref} -> {settings.mirror_image_url}/{repo}:{tag}")
            docker("tag", ref, target)
            docker("push", target)
            docker("image", "rm", target)
            pushed += 1
    log(f"images: {pushed} pushed, {current} already current, from {len(archives)} archive(s)")


# --- commands --------------------------------------------------------------------------------


def print_urls(settings: Settings) -> None:
    print(f"download_mirror_url: {settings.mirror_download_url}   (from nodes on {settings.network_name})")
    print(f"image_mirror_url:    {settings.mirror_image_url}   (from nodes on {settings.network_name})")
    files = f"http://{settings.mirror_ipv4_address}:{settings.mirror_http_port}"
    print(f"from the host:       {files} (files), {host_registry_url(settings)} (registry, docker push)")


def start(settings: Settings, with_images: bool) -> int:
    require_engine()
    cache = cache_root()
    ensure_network(settings)
    ensure_mirror_image()
    ensure_container(settings, cache)
    wait_until_serving(settings)
    if with_images:
        load_images(settings, cache)
    print_urls(settings)
    return 0


def stop(settings: Settings) -> int:
    require_engine()
    if container_state(settings.mirror_container) is None:
        log(f"{settings.mirror_container} is not there")
        return 0
    docker("rm", "--force", settings.mirror_container)
    log(f"removed {settings.mirror_container}; the registry data stays in {cache_root() / 'mirror-registry'}")
    return 0


def status(settings: Settings) -> int:
    require_engine()
    state = container_state(settings.mirror_container)
    if not state or state["status"] != "running":
        log(f"{settings.mirror_container} is {state['status'] if state else 'absent'}")
        return 3
    with urllib.request.urlopen(f"{host_registry_url(settings)}/v2/_catalog?n=1000", timeout=5) as response:
        repos = json.load(response).get("repositories", [])
    log(f"{settings.mirror_container} is running; registry holds {len(repos)} repositories")
    for repo in repos:
        print(f"  {repo}")
    print_urls(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--no-images", action="store_true", help="start without pushing mirror/images/*.tar")
    args = parser.parse_args(argv)
    settings = Settings.load()
    if args.command == "start":
        return start(settings, with_images=not args.no_images)
    if args.command == "stop":
        return stop(settings)
    return status(settings)


if __name__ == "__main__":
    sys.exit(main())
