"""The lab's Git server: Git's smart HTTP protocol (git http-backend) behind HTTP Basic auth.

Stands in for the forge a real cluster's GitOps repository lives on: the gitops role pushes the
tree to it and ArgoCD pulls from it, both with the credentials of homelab_secret_refs, as they would
with a token on a forge. Standard library only, so it runs on Debian's python3 in the mirror
container.

    python3 git_http.py --root DIR --password-file FILE [--user git] [--port 8081] [--repo cluster.git]

Every request needs the user and the password in FILE (reads too, as on a private repository).
The repositories named with --repo are created bare (branch main) if missing.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import os
import shutil
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def load_password(path: Path) -> str:
    password = path.read_text().strip()
    if not password:
        sys.exit(f"git_http: {path} is empty")
    return password


def ensure_repository(root: Path, name: str) -> None:
    repo = root / name
    if (repo / "HEAD").exists():
        return
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch", "main", str(repo)], check=True)
    print(f"git_http: created {repo}", flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "homelab-git"
    root: Path
    credentials: tuple[str, str]
    backend: str

    def authorised(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        want_user, want_password = self.credentials
        same_user = hmac.compare_digest(user.encode(), want_user.encode())
        same_password = hmac.compare_digest(password.encode(), want_password.encode())
        return user if same_user and same_password else None

    def handle_git(self) -> None:
        user = self.authorised()
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="homelab lab git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            # Every repository under the root is served; receive-pack is on for an authenticated user.
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.client_address[0],
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(url.path),
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        result = subprocess.run([self.backend], input=body, env=env, capture_output=True, check=False)
        head, sep, payload = result.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = result.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        if result.returncode != 0 and status == 200:
            status, payload = 500, result.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = handle_git
    do_POST = handle_git

    def log_message(self, format: str, *args: object) -> None:
        # One line per request, without the query string's details or any header.
        sys.stderr.write(f"git_http: {self.address_string()} {format % args}\n")


def http_backend() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    if not backend.exists():
        sys.exit(f"git_http: {backend} is missing (is git installed?)")
    return str(backend)


def make_server(root: Path, credentials: tuple[str, str], port: int, bind: str = "0.0.0.0") -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"root": root, "credentials": credentials, "backend": http_backend()})
    return ThreadingHTTPServer((bind, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--user", default="git")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--repo", action="append", default=[])
    args = parser.parse_args()
    if shutil.which("git") is None:
        sys.exit("git_http: git is not installed")
    args.root.mkdir(parents=True, exist_ok=True)
    for name in args.repo:
        ensure_repository(args.root, name)
    server = make_server(args.root, (args.user, load_password(args.password_file)), args.port, args.bind)
    print(f"git_http: serving {args.root} on {args.bind}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
