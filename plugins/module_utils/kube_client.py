# The Kubernetes API client of the controller-side modules (kube_apply, kube_read).
"""One dynamic API client per module run, from the admin kubeconfig, with the errors it raises.

Without the kubernetes Python package on the controller the names still import (the exception
classes then match nothing) and dynamic_client() fails the module with what to install.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

try:
    import urllib3
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
except ImportError as exc:  # reported by dynamic_client(), as Ansible modules do
    KUBERNETES_IMPORT_ERROR: ImportError | None = exc

    class DynamicApiError(Exception):  # type: ignore[no-redef]
        """Stands in for kubernetes' error class: nothing raises it."""

    class NotFoundError(DynamicApiError):  # type: ignore[no-redef]
        """Stands in for kubernetes' error class: nothing raises it."""

    class ResourceNotFoundError(Exception):  # type: ignore[no-redef]
        """Stands in for kubernetes' error class: nothing raises it."""

else:
    KUBERNETES_IMPORT_ERROR = None

__all__ = ["DynamicApiError", "NotFoundError", "ResourceNotFoundError", "dynamic_client"]

# Every request gets an answer within these seconds (connect, read) or is sent again: a request
# through the VIP whose connection dies behind HAProxy (an API server restarting, a node's
# networking replaced by Cilium's) would otherwise wait for HAProxy's timeout, an hour.
# The modules send only GETs and server-side applies, which are safe to send again.
REQUEST_TIMEOUT = (10, 60)
ATTEMPTS = 3
RETRY_DELAY = 2.0


def dynamic_client(module: Any) -> Any:
    """The DynamicClient for module.params['kubeconfig']; fails the module without the kubernetes package."""
    if KUBERNETES_IMPORT_ERROR is not None:
        module.fail_json(
            msg="the kubernetes Python package is missing on the controller (pip install kubernetes, or `make venv`): "
            f"{KUBERNETES_IMPORT_ERROR}"
        )
    api = config.new_client_from_config(config_file=module.params["kubeconfig"])
    api.call_api = patient(api.call_api, module)
    return DynamicClient(api)


def patient(
    call_api: Callable[..., Any], module: Any, sleep: Callable[[float], None] = time.sleep
) -> Callable[..., Any]:
    """call_api with REQUEST_TIMEOUT unless the caller set one, sent up to ATTEMPTS times when
    the API server does not answer; then the module fails with what was asked and what happened."""

    def call(method: str, url: str, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        timeout = _request_timeout or REQUEST_TIMEOUT
        for attempt in range(1, ATTEMPTS):
            try:
                return call_api(method, url, *args, _request_timeout=timeout, **kwargs)
            except urllib3.exceptions.HTTPError:
                sleep(RETRY_DELAY * attempt)
        try:
            return call_api(method, url, *args, _request_timeout=timeout, **kwargs)
        except urllib3.exceptions.HTTPError as exc:
            module.fail_json(
                msg=f"the API server did not answer {method} {url} ({ATTEMPTS} attempts, timeout {timeout}): "
                f"{exc}. Check that the API servers run and the VIP answers."
            )
            raise  # fail_json exits the module; a stand-in module in tests may return

    return call
