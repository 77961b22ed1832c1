"""Asking the node running on this host, over its HTTP side, with the local control token
(:func:`smartswitch.web.security.local_control_token`: only whoever can read the node's data
directory can make it): ``smartswitch drain`` and the write fence of the configuration
commands (:func:`write_fence`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from smartswitch.registrar.report import base_url

__all__ = ["ControlError", "call", "node_url", "write_fence"]

#: The node bounds its own etcd round trips (runtime/failover.py WRITE_FENCE_TIMEOUT, 2 s);
#: this leaves it room to answer.
WRITE_FENCE_WAIT = 5.0


class ControlError(RuntimeError):
    """The node could not be asked, or refused (``status``: its HTTP status, 0 if none;
    ``detail``: its reason)."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def node_url(http_listen: str) -> str:
    return base_url(http_listen)


def call(
    url: str, token: str, method: str, body: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")[:300]
        try:
            detail = str(json.loads(text).get("detail", text))
        except (ValueError, AttributeError):
            detail = text
        raise ControlError(f"{method} {url}: {exc.code} {text}", exc.code, detail) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ControlError(f"{method} {url}: {exc}") from None


def write_fence(http_listen: str, data_dir: Path) -> str | None:
    """Ask the running node whether a configuration change may be made now (with automatic
    failover it confirms with etcd, at this moment, that it holds the primary lease); None
    when it may, the reason otherwise. A node that cannot be asked holds no lease: refused."""
    from smartswitch.web.security import local_control_token

    token = local_control_token(data_dir)
    if token is None:
        return f"no node secret in {data_dir}: cannot ask the node for its primary lease"
    url = node_url(http_listen)
    try:
        call(url + "/api/v1/node/write-fence", token, "GET", None, timeout=WRITE_FENCE_WAIT)
    except ControlError as exc:
        if exc.status:
            return exc.detail
        return (
            f"this node cannot confirm it holds the primary lease: its node at {url} did not "
            f"answer ({exc}); with automatic failover configuration is changed only through a "
            "running node that holds the lease"
        )
    return None
