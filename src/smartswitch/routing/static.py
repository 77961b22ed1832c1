"""Lab routing from the node config (``[[route]]``): prefix to SIP URIs, no billing.

Kept for labs and for measuring the bare B2BUA; production routing identifies the caller,
rates and bills the call (see :mod:`smartswitch.routing.policy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smartswitch.b2bua.ports import CallAttempt, CallSummary, Destination, Rejection
from smartswitch.model.prefix import PrefixTable
from smartswitch.sip.dialog import uri_address
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address
from smartswitch.sip.uri import SipUri, format_host

log = logging.getLogger("smartswitch.routing")


def destination_uri(callee: str, uri: SipUri) -> str:
    port = f":{uri.port}" if uri.port else ""
    transport = f";transport={uri.transport}" if uri.transport != "udp" else ""
    # sips: (RFC 3261 19.1): TLS to that hop, the scheme kept for the next one.
    return f"{uri.scheme}:{callee}@{format_host(uri.host)}{port}{transport}"


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """Lab routing (``[[route]]``): a prefix to a list of SIP URIs, no billing."""

    prefix: str
    destinations: tuple[str, ...]


class StaticPolicy:
    def __init__(self, routes: Sequence[StaticRoute], accept_any_source: bool) -> None:
        self.accept_any_source = accept_any_source
        self.table: PrefixTable[tuple[SipUri, ...]] = PrefixTable(
            (r.prefix, tuple(SipUri.parse(d) for d in r.destinations)) for r in routes
        )

    def route(self, request: Request, source: Address, now: float) -> LabCall | Rejection:
        if not self.accept_any_source:
            return Rejection(403, "Forbidden")
        callee = request.sip_uri.user or ""
        uris = self.table.lookup(callee.lstrip("+"))
        if not uris:
            return Rejection(404, "Not Found (no route)")
        caller = request.from_.sip_uri().user or "anonymous"
        return LabCall(
            tuple(
                Destination(destination_uri(callee, u), uri_address(u), callee, caller, str(u))
                for u in uris
            )
        )


@dataclass(frozen=True, slots=True)
class LabCall:
    """The session of a lab call: the route's URIs one after the other, as long as the node
    lets calls last, and a log line at the end instead of a CDR."""

    destinations: tuple[Destination, ...]
    fork: bool = False
    max_duration: float | None = None

    def answered(self, attempt: CallAttempt) -> None:
        pass

    def extend(self, now: float) -> float:
        return 0.0

    def ended(self, summary: CallSummary, done: Callable[[], None]) -> None:
        done()
        log.debug(
            "call %s: ended %s %s, %.3f s, hangup by %s (%s)",
            summary.call_id,
            summary.status,
            summary.reason,
            summary.duration,
            summary.hangup_side,
            summary.hangup_reason,
        )
