# The Kubernetes API client of the controller-side modules (kube_apply, kube_read).
"""One dynamic API client per module run, from the admin kubeconfig, with the errors it raises.

Without the kubernetes Python package on the controller the names still import (the exception
classes then match nothing) and dynamic_client() fails the module with what to install.
"""

from __future__ import annotations

from typing import Any

try:
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


def dynamic_client(module: Any) -> Any:
    """The DynamicClient for module.params['kubeconfig']; fails the module without the kubernetes package."""
    if KUBERNETES_IMPORT_ERROR is not None:
        module.fail_json(
            msg="the kubernetes Python package is missing on the controller (pip install kubernetes, or `make venv`): "
            f"{KUBERNETES_IMPORT_ERROR}"
        )
    return DynamicClient(config.new_client_from_config(config_file=module.params["kubeconfig"]))
