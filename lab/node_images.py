"""Build the systemd node images homelab-node:debian12/debian13 with debootstrap (cached by content)."""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

IMAGE_REPO = "homelab-node"
KEY_LABEL = "io.homelab.node-image.key"
DEBIAN_MIRROR = os.environ.get("HOMELAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("HOMELAB_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")


@dataclass(frozen=True)
class Flavour:
    tag: str
    suite: str


FLAVOURS = (Flavour("debian12", "bookworm"), Flavour("debian13", "trixie"))

# What a freshly installed Debian server brings that the playbooks rely on (python3 for Ansible,
# python3-apt so the apt module works in check mode, systemd as PID 1) and nothing of Kubernetes:
# the roles under test must install their own packages.
PACKAGES = (
    "ca-certificates",
    "dbus",
    "iproute2",
    "iptables",
    "kmod",
    "openssh-server",
    "procps",
    "python3",
    "python3-apt",
    "sudo",
    "systemd",
    "systemd-sysv",
)

# Units that cannot work in a container or would disturb a test run (the same idea as kind's base
# image). systemd-modules-load: this machine's kernel has no loadable modules, everything is built in.
# apt-daily*: a background apt run would take the dpkg lock in the middle of a converge.
MASKED_UNITS = (
    "apt-daily-upgrade.timer",
    "apt-daily.timer",
    "console-getty.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty.target",
    "proc-sys-fs-binfmt_misc.automount",
    "serial-getty@.service",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "systemd-binfmt.service",
    "systemd-firstboot.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "systemd-udev-settle.service",
    "systemd-udev-trigger.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udevd.service",
)

ENTRYPOINT_PATH = "/usr/local/sbin/lab-entrypoint"
ENTRYPOINT = """#!/bin/sh
# lab-entrypoint: prepare what docker leaves read-only for kubelet, then boot systemd.
set -eu
# kubelet's ContainerManager writes sysctls at start; docker mounts /proc/sys read-only.
mount -o remount,rw /proc/sys
# With a private cgroup namespace the cgroup hierarchies belong to this node, but docker mounts
# them read-only; systemd and kubelet create kubepods.slice below them.
for m in $(awk '$2 ~ "^/sys/fs/cgroup" {print $2}' /proc/self/mounts); do
    mount -o remount,bind,rw "$m"
done
# Mount propagation for kubelet volumes and Cilium's bpffs (HostToContainer/Bidirectional).
mount --make-rshared /
# The node's BPF filesystem, mounted as a host's systemd would: Cilium's own mount-bpf-fs init
# container is privileged, which a nested container cannot be under the host's cgroup v1 device
# controller (the lab turns Cilium's bpf.autoMount off instead).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mount --make-shared /sys/fs/bpf
# Name servers for pods (kubelet's resolvConf in the lab): docker's embedded DNS (127.0.0.11)
# only answers inside this node's network namespace, and CoreDNS forwarding to a loopback address
# would query itself. The host's servers (LAB_UPSTREAM_DNS, from lab/playbooks/create.yml), else
# the lab network's gateway so that CoreDNS starts (names outside the cluster then fail).
{
    for ns in ${LAB_UPSTREAM_DNS:-$(ip -4 route show default | awk '{print $3; exit}')}; do
        echo "nameserver $ns"
    done
    grep -E '^(search|options)' /etc/resolv.conf || true
} > /etc/lab-resolv.conf
# Each node needs its own machine-id (kubelet and journald key on it); the image ships it empty.
[ -s /etc/machine-id ] || systemd-machine-id-setup >/dev/null
exec "$@"
"""

APT_SOURCES = """Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

APT_LEAN_CONF = """// Node container image: package lists stay compressed and without translations (~19 MB, not ~85 MB).
Acquire::Languages "none";
Acquire::GzipIndexes "true";
"""

# Host keys are per node, so the image ships none; sshd makes them on its first start. (Not in the
# entrypoint: until it execs systemd, `systemctl` in the node fails, and RSA keys take seconds.)
SSH_HOST_KEYS_DROPIN = """# Node image: host keys are made on each node's first start, never shipped in the image.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""

JOURNALD_CONF = """# Node container: /dev/kmsg is the host's ring buffer; reading it copies host logs into every node.
[Journal]
ReadKMsg=no
"""

DPKG_EXCLUDES = """# Node container image: no documentation, manual pages or translations (copyright files stay).
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""


def log(message: str) -> None:
    print(f"node_images: {message}", flush=True)


def run(cmd: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """Run a build step quietly; on failure show its output, which is the only useful diagnosis."""
    result = subprocess.run(
        cmd, input=stdin, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        sys.exit(f"node_images: `{' '.join(cmd)}` failed with exit code {result.returncode}:\n{tail}")
    return result.stdout


def cache_dir() -> Path:
    root = os.environ.get("HOMELAB_CACHE") or str(Path.home() / ".cache" / "homelab-bootstrap")
    return Path(root) / "node-images"


def image_ref(flavour: Flavour) -> str:
    return f"{IMAGE_REPO}:{flavour.tag}"


def image_id(ref: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def current_key(ref: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}', ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


# Images build in parallel threads: one of them installs debootstrap, the others wait for it.
_DEBOOTSTRAP_LOCK = threading.Lock()
# apt waits for a dpkg lock held by another apt (e.g. the docker engine's install) instead of failing.
APT_LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=300"]


def ensure_debootstrap(suite: str) -> None:
    with _DEBOOTSTRAP_LOCK:
        if shutil.which("debootstrap") is None:
            log("installing debootstrap")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", *APT_LOCK_WAIT, "update", "-q"], env=env, check=False)
            run(["apt-get", *APT_LOCK_WAIT, "install", "-y", "-q", "debootstrap"], env=env)
        scripts = Path("/usr/share/debootstrap/scripts")
        # An older debootstrap may not know a newer suite; every Debian suite uses the sid script.
        if not (scripts / suite).exists():
            log(f"debootstrap has no script for {suite}; linking it to sid")
            (scripts / suite).symlink_to("sid")


def mask_units(rootfs: Path) -> None:
    unit_dir = rootfs / "etc/systemd/system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in MASKED_UNITS:
        link = unit_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    default = unit_dir / "default.target"
    default.unlink(missing_ok=True)
    default.symlink_to("/lib/systemd/system/multi-user.target")


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def chroot(rootfs: Path, *cmd: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
    }
    run(["chroot", str(rootfs), *cmd], env=env)


def customise(rootfs: Path, flavour: Flavour) -> None:
    """Turn the debootstrap tree into a node: sources, updates, entrypoint, masks, no identity."""
    write_file(rootfs / "etc/dpkg/dpkg.cfg.d/lab-excludes", DPKG_EXCLUDES)
    write_file(rootfs / "etc/apt/apt.conf.d/lab-lean", APT_LEAN_CONF)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    write_file(
        rootfs / "etc/apt/sources.list.d/debian.sources",
        APT_SOURCES.format(mirror=DEBIAN_MIRROR, security=SECURITY_MIRROR, suite=flavour.suite),
    )
    # The package lists stay in the image: Ansible's apt module in check mode (the first step of
    # the molecule sequence) cannot refresh them and would report every package as unknown.
    run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])
    try:
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        chroot(rootfs, "apt-get", "update", "-q")
        chroot(rootfs, "apt-get", "upgrade", "-y", "-q")
        chroot(rootfs, "apt-get", "clean")
    finally:
        run(["umount", str(rootfs / "proc")])
    for docs in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(rootfs / docs, ignore_errors=True)
    for entry in (rootfs / "usr/share/doc").glob("*/*"):
        if entry.name != "copyright":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    write_file(rootfs / ENTRYPOINT_PATH.lstrip("/"), ENTRYPOINT, 0o755)
    write_file(rootfs / "etc/systemd/journald.conf.d/lab-node.conf", JOURNALD_CONF)
    write_file(rootfs / "etc/systemd/system/ssh.service.d/lab-host-keys.conf", SSH_HOST_KEYS_DROPIN)
    mask_units(rootfs)
    # Identity is created per container by the entrypoint.
    (rootfs / "etc/machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for leftover in ("var/log/bootstrap.log", "var/cache/debconf/templates.dat-old"):
        (rootfs / leftover).unlink(missing_ok=True)


def build_rootfs_tarball(flavour: Flavour, tarball: Path, workdir: Path) -> None:
    ensure_debootstrap(flavour.suite)
    debs = cache_dir() / "debs" / flavour.suite
    debs.mkdir(parents=True, exist_ok=True)
    rootfs = workdir / "rootfs"
    log(f"debootstrap {flavour.suite} from {DEBIAN_MIRROR}")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}",
            flavour.suite,
            str(rootfs),
            DEBIAN_MIRROR,
        ]
    )
    customise(rootfs, flavour)
    partial = tarball.with_suffix(".partial")
    run(
        [
            "tar",
            "--numeric-owner",
            "--one-file-system",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-C",
            str(rootfs),
            "-cf",
            str(partial),
            ".",
        ]
    )
    partial.rename(tarball)


def rootfs_key(flavour: Flavour) -> str:
    """Hash of everything that shapes the root filesystem, including the code that builds it.

    Only those functions count, not this whole file, so that an edit elsewhere does not throw away
    a three-minute debootstrap.
    """
    material = json.dumps(
        {
            "suite": flavour.suite,
            "packages": PACKAGES,
            "masked": MASKED_UNITS,
            "mirrors": [DEBIAN_MIRROR, SECURITY_MIRROR],
            "files": [ENTRYPOINT, APT_SOURCES, APT_LEAN_CONF, JOURNALD_CONF, DPKG_EXCLUDES, SSH_HOST_KEYS_DROPIN],
            "code": [inspect.getsource(f) for f in (build_rootfs_tarball, customise, mask_units, chroot, write_file)],
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def image_config(rootfs_ref: str) -> str:
    """The image settings on top of the imported root filesystem, as a Dockerfile."""
    lines = [
        f"FROM {rootfs_ref}",
        "ENV container=docker",
        # systemd shuts down cleanly on SIGRTMIN+3; on SIGTERM it would re-execute itself.
        "STOPSIGNAL SIGRTMIN+3",
        f'ENTRYPOINT ["{ENTRYPOINT_PATH}"]',
        'CMD ["/sbin/init"]',
    ]
    return "\n".join(lines) + "\n"


def image_key(flavour: Flavour) -> str:
    material = rootfs_key(flavour) + image_config("")
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def import_image(flavour: Flavour, tarball: Path, key: str) -> None:
    # `docker import --change` of engine 20.10 rejects STOPSIGNAL, so the image config comes from a
    # context-less build on top of the imported root filesystem (works offline, no base image).
    rootfs_ref = f"{IMAGE_REPO}-rootfs:{flavour.tag}"
    run(["docker", "import", str(tarball), rootfs_ref])
    dockerfile = image_config(rootfs_ref) + f"LABEL {KEY_LABEL}={key}\n"
    # The legacy builder: Debian's engine has no BuildKit frontend without the buildx plugin.
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    run(["docker", "build", "--quiet", "--tag", image_ref(flavour), "-"], stdin=dockerfile, env=env)
    run(["docker", "image", "rm", rootfs_ref])


def ensure_image(flavour: Flavour, force: bool) -> None:
    started = time.monotonic()
    key = image_key(flavour)
    ref = image_ref(flavour)
    if not force and current_key(ref) == key:
        log(f"{ref} is up to date (key {key})")
        return
    store = cache_dir()
    store.mkdir(parents=True, exist_ok=True)
    tarball = store / f"{flavour.tag}-{rootfs_key(flavour)}.tar"
    if force or not tarball.exists():
        with tempfile.TemporaryDirectory(prefix=f"build-{flavour.tag}-", dir=store) as tmp:
            try:
                build_rootfs_tarball(flavour, tarball, Path(tmp))
            finally:
                # Never let TemporaryDirectory recurse into a still mounted /proc.
                proc = Path(tmp) / "rootfs/proc"
                if proc.is_mount():
                    subprocess.run(["umount", "-l", str(proc)], check=False)
        for stale in store.glob(f"{flavour.tag}-*.tar"):
            if stale != tarball:
                stale.unlink()
    else:
        log(f"reusing {tarball}")
    import_image(flavour, tarball, key)
    # Replaced builds linger untagged; this removes those no container uses any more (only ours:
    # the label is on node images and the mirror image built on them).
    prune = ["docker", "image", "prune", "--force", f"--filter=label={KEY_LABEL}"]
    subprocess.run(prune, capture_output=True, check=False)
    log(f"{ref} built in {time.monotonic() - started:.0f} s (key {key})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tags", nargs="*", help="image tags to build (default: all): debian12, debian13")
    parser.add_argument("--force", action="store_true", help="rebuild even when image and tarball are current")
    parser.add_argument("--jobs", type=int, default=2, help="images built at the same time (default: 2)")
    args = parser.parse_args(argv)
    known = {flavour.tag: flavour for flavour in FLAVOURS}
    unknown = [tag for tag in args.tags if tag not in known]
    if unknown:
        parser.error(f"unknown tag(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if os.geteuid() != 0:
        sys.exit("node_images: debootstrap needs root")
    # The builds are independent and spend much of their time waiting on downloads and fsync.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        builds = [pool.submit(ensure_image, known[tag], args.force) for tag in args.tags or list(known)]
        for build in builds:
            build.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
