"""Ensure a running docker engine on the lab host (install docker.io, start dockerd without systemd)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DOCKERD_LOG = Path("/var/log/dockerd.log")
DOCKERD_PID = Path("/var/run/docker.pid")
DEFAULT_TIMEOUT = 60.0


def engine_answers() -> bool:
    """True when `docker info` reaches a daemon (the CLI negotiates the API version itself)."""
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def install_engine() -> None:
    """Install Debian's docker.io; only the engine matters, any newer CLI on PATH keeps working."""
    if os.geteuid() != 0:
        sys.exit("docker_engine: dockerd is missing and installing it needs root (apt-get install docker.io)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("docker_engine: installing docker.io with apt-get", flush=True)
    # A fresh machine may have no package lists yet; an update failure (one flaky mirror) is not fatal.
    # Wait for a dpkg lock that another apt holds instead of failing.
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    subprocess.run([*apt, "update", "-q"], env=env, check=False)
    subprocess.run([*apt, "install", "-y", "-q", "docker.io"], env=env, check=True)


def start_dockerd() -> subprocess.Popen[bytes]:
    """Start dockerd detached: there is no systemd on the host, so nothing else would supervise it."""
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    print(f"docker_engine: starting dockerd (log: {DOCKERD_LOG})", flush=True)
    with DOCKERD_LOG.open("ab") as log:
        return subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: make's process group ending (or Ctrl-C) must not take the daemon along.
            start_new_session=True,
        )


def running_dockerd_pid() -> int | None:
    """The pid of a dockerd that is still starting up (a second one would fail on the pid file)."""
    try:
        pid = int(DOCKERD_PID.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if Path(cmdline.split(b"\0")[0].decode(errors="replace")).name == "dockerd" else None


def wait_for_engine(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_answers():
            return
        if proc is not None and proc.poll() is not None:
            tail = DOCKERD_LOG.read_text(errors="replace").splitlines()[-15:]
            lines = "\n".join(tail)
            sys.exit(f"docker_engine: dockerd exited with code {proc.returncode}; last log lines:\n{lines}")
        time.sleep(0.5)
    sys.exit(f"docker_engine: dockerd did not answer `docker info` within {timeout:.0f} s; see {DOCKERD_LOG}")


# Every node container's systemd, journald and containerd take inotify instances from root's one
# budget on the host (the kernel does not namespace it); at the kernel default of 128 a few
# nodes exhaust it and containerd starts without its CRI plugin ("too many open files").
HOST_INOTIFY_MINIMUMS = {
    "fs/inotify/max_user_instances": 8192,
    "fs/inotify/max_user_watches": 1048576,
}


def raise_host_limits() -> None:
    """Raise (never lower) the host kernel limits that many node containers share."""
    for name, minimum in HOST_INOTIFY_MINIMUMS.items():
        path = Path("/proc/sys") / name
        current = int(path.read_text().split()[0])
        if current < minimum:
            path.write_text(f"{minimum}\n")
            print(f"docker_engine: raised {name.replace('/', '.')} from {current} to {minimum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for dockerd")
    args = parser.parse_args(argv)

    raise_host_limits()
    if engine_answers():
        print("docker_engine: engine already running")
        return 0
    if shutil.which("dockerd") is None:
        install_engine()
    if shutil.which("docker") is None:
        sys.exit("docker_engine: no docker CLI on PATH after installing docker.io")
    started = time.monotonic()
    pid = running_dockerd_pid()
    proc = None
    if pid is None:
        proc = start_dockerd()
        pid = proc.pid
    else:
        print(f"docker_engine: dockerd (pid {pid}) is starting; waiting for it", flush=True)
    wait_for_engine(proc, args.timeout)
    print(f"docker_engine: engine up after {time.monotonic() - started:.1f} s (pid {pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
