# kube_client's requests: a request the API server never answers (a connection through the VIP
# that died behind HAProxy) fails after a timeout and is sent again, instead of hanging the run.
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from ansible_collections.homelab.bootstrap.plugins.module_utils import kube_client


class Failed(Exception):
    """What the stand-in module's fail_json raises, as AnsibleModule's exits."""


class Module:
    def __init__(self, kubeconfig: str = "") -> None:
        self.params = {"kubeconfig": kubeconfig}
        self.failures: list[str] = []

    def fail_json(self, msg: str, **_: Any) -> None:
        self.failures.append(msg)
        raise Failed(msg)


def test_the_default_timeout_is_set_and_a_given_one_kept() -> None:
    seen: list[Any] = []
    call = kube_client.patient(lambda *_a, _request_timeout=None, **_k: seen.append(_request_timeout), Module())
    call("GET", "/api")
    call("GET", "/api", None, None, None, _request_timeout=5)
    assert seen == [kube_client.REQUEST_TIMEOUT, 5]


def test_a_request_without_answer_is_sent_again() -> None:
    attempts: list[int] = []
    delays: list[float] = []

    def flaky(*_a: Any, **_k: Any) -> str:
        attempts.append(1)
        if len(attempts) < kube_client.ATTEMPTS:
            raise urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out")
        return "answer"

    assert kube_client.patient(flaky, Module(), sleep=delays.append)("PATCH", "/apis/x") == "answer"
    assert len(attempts) == kube_client.ATTEMPTS
    assert delays == [kube_client.RETRY_DELAY * n for n in range(1, kube_client.ATTEMPTS)]


def test_errors_of_the_api_itself_are_not_retried() -> None:
    calls: list[int] = []

    def refused(*_a: Any, **_k: Any) -> None:
        calls.append(1)
        raise ValueError("a 422 answer is an answer")

    with pytest.raises(ValueError, match="422"):
        kube_client.patient(refused, Module(), sleep=lambda _s: None)("PATCH", "/apis/x")
    assert calls == [1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers, as a dead HAProxy backend."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_api_server_fails_the_module_instead_of_hanging(
    tmp_path: Path, silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_client, "REQUEST_TIMEOUT", (1, 1))
    monkeypatch.setattr(kube_client, "RETRY_DELAY", 0.1)
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{silent_server}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    module = Module(str(kubeconfig))
    started = time.monotonic()
    with pytest.raises(Failed):
        kube_client.dynamic_client(module)  # discovery is the first request
    assert time.monotonic() - started < 20
    assert len(module.failures) == 1
    assert "did not answer GET" in module.failures[0] and "3 attempts" in module.failures[0]
