"""``smartswitch drain``: take this host's node out of service before stopping it.

The command asks the running node (its HTTP side, ``/api/v1/node/drain``) with the local
control token, which only whoever can read the node's data directory can make (see
:func:`smartswitch.web.security.local_control_token`); then it follows the drain until the
node is drained and has stopped. Exit 0: every call ended, every CDR delivered, the node gone.
Exit 1: the node could not be asked, stopped answering before it was drained, or left CDRs in
its outbox (durable: they leave at its next start).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from smartswitch.cli.control import ControlError, call, node_url

__all__ = ["DrainError", "drain", "node_url"]

#: How long to wait for the node's HTTP port to close once it says it is drained.
EXIT_WAIT = 30.0

#: The node could not be asked, or refused.
DrainError = ControlError


def _gone(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0):
            return False
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, OSError):
        return True


def _line(status: dict[str, Any]) -> str:
    outbox = status.get("outbox_depth")
    return (
        f"{status['phase']}: {status['calls']} calls in progress, "
        f"outbox {'-' if outbox is None else outbox}, {status['seconds_left']:.0f} s to deadline"
    )


def drain(
    url: str,
    token: str,
    *,
    deadline: float,
    retry_after: int,
    flush_timeout: float,
    wait: bool,
    out: TextIO,
) -> int:
    """Start the drain and (with ``wait``) follow it to the node's exit; the exit code."""
    endpoint = url.rstrip("/") + "/api/v1/node/drain"
    body = {"deadline": deadline, "retry_after": retry_after, "flush_timeout": flush_timeout}
    status = call(endpoint, token, "POST", body, timeout=10.0)
    out.write(f"draining {url}: new calls refused with 503 (Retry-After {retry_after} s)\n")
    out.write(_line(status) + "\n")
    out.flush()
    if not wait:
        return 0
    last = ""
    # Bounded: the node's own deadline, its outbox flush, and some slack for the loop.
    give_up = time.monotonic() + deadline + flush_timeout + 5.0 + 60.0
    while status["phase"] != "drained":
        if time.monotonic() > give_up:
            raise DrainError("the node did not finish draining in time")
        try:
            status = call(endpoint + "?wait=2", token, "GET", None, timeout=15.0)
        except DrainError:
            if _gone(url):
                out.write("the node stopped answering before it said it was drained\n")
                return 1
            raise
        line = _line(status)
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
    stopped_by = time.monotonic() + EXIT_WAIT
    while not _gone(url) and time.monotonic() < stopped_by:
        time.sleep(0.1)
    ended = int(status.get("calls_ended_at_deadline") or 0)
    if ended:
        out.write(f"{ended} calls were still up at the deadline and were ended\n")
    depth = int(status.get("outbox_depth") or 0)
    if depth:
        out.write(
            f"{depth} CDRs could not be delivered: they stay in the node's outbox and are "
            "delivered at its next start\n"
        )
        return 1
    if not _gone(url):
        out.write(f"drained, but the node still answers {EXIT_WAIT:.0f} s later\n")
        return 1
    out.write("drained: every CDR delivered, the node has stopped\n")
    return 0
