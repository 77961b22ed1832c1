"""Calls to our DIDs: from a peer that delivers DIDs to the DID's owner.

Only a peer flagged ``deliver_dids`` (recognised by its ACL) can deliver a DID call; an INVITE
for a DID number from anywhere else is an ordinary call, identified (or refused) as usual.

* DID -> subscriber: every live binding of the subscriber is called at once (the session's
  ``fork``: first answer wins, the others CANCELled); each B leg's Request-URI is the
  binding's Contact and it is sent to the address the REGISTER came from (NAT), over the
  same transport. No binding: 480 Temporarily Unavailable.
* DID -> peer: the call is forwarded to the peer's address (a trunk of a customer or a
  supplier), the DID as the callee.

Billing (documented in docs/registrar.md): a DID call is free to the DID's owner and carries no
cost: price 0 and cost 0, nothing reserved, no balance needed. Its CDR is written all the
same: the owner as the customer (a subscriber: ``customer_peer_id`` 0 and ``subscriber_id``;
a peer: that peer), the delivering peer as the supplier, the DID as the callee, the answered
duration, ``billed_seconds`` 0. Rating inbound minutes (a DID price, or what the DID provider
charges us) is left for later; the CDRs hold what it will need.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from smartswitch.b2bua.ports import CallAttempt, CallSummary, Destination, Rejection
from smartswitch.model.cdr import CdrRecord
from smartswitch.model.config import Did, Peer
from smartswitch.registrar.location import LocationService
from smartswitch.routing.records import CallRecords
from smartswitch.routing.selection import rewrite_number
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address, shared_address
from smartswitch.sip.uri import SipUri, default_port, format_host

__all__ = ["DidCall", "route_did"]

log = logging.getLogger("smartswitch.routing")


@dataclass(frozen=True, slots=True)
class DidCall:
    """A call to one of our DIDs: the :class:`~smartswitch.b2bua.ports.CallSession` of a DID
    call. Nothing to reserve or extend (the node's maximum duration is granted at once); at
    the end, its CDR, not rated (see the module docstring)."""

    destinations: tuple[Destination, ...]
    fork: bool
    max_duration: float
    did: Did
    delivering: Peer  # the provider that delivered the call: the CDR's supplier
    owner_peer_id: int  # 0 for a subscriber
    owner_account_id: int
    subscriber_id: int | None
    currency: str
    caller: str  # as received
    callee: str
    records: CallRecords

    def answered(self, attempt: CallAttempt) -> None:
        pass

    def extend(self, now: float) -> float:
        return 0.0

    def ended(self, summary: CallSummary, done: Callable[[], None]) -> None:
        self.records.keep(self.record(summary), done)

    def record(self, summary: CallSummary) -> CdrRecord:
        """The CDR of the finished call, not rated: the owner as the customer, the provider
        that delivered the call as the supplier."""
        return self.records.cdr(
            summary,
            customer_peer_id=self.owner_peer_id,
            customer_account_id=self.owner_account_id,
            subscriber_id=self.subscriber_id,
            caller=self.caller,
            callee=self.callee,
            callee_out=self.did.number,
            currency=self.currency,
            supplier_peer_id=self.delivering.id,
            supplier_account_id=self.delivering.account_id,
        )


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


def find_did(views: ConfigViews, peer: Peer, callee: str) -> Did | None:
    """The DID an INVITE from ``peer`` is for: the number as received, else as the peer's
    callee rewrite rules normalise it (a provider sending national numbers, say)."""
    dids = views.dids
    did = dids.get(_digits(callee))
    if did is None and peer.callee_rewrite:
        did = dids.get(_digits(rewrite_number(callee, peer.callee_rewrite)))
    return did


def route_did(
    views: ConfigViews,
    location: LocationService | None,
    request: Request,
    source: Address,
    now: float,
    max_call_duration: float,
    records: CallRecords,
) -> DidCall | Rejection | None:
    """The session of a DID call, its refusal, or None when the INVITE is not one (go on as
    usual)."""
    if not views.dids:
        return None
    delivering = views.did_acl.match(source.host, source.port)
    if delivering is None:
        return None
    callee = request.sip_uri.user or ""
    did = find_did(views, delivering, callee)
    if did is None:
        return None
    caller = request.from_.sip_uri().user or "anonymous"
    caller_out = rewrite_number(caller, delivering.caller_rewrite)
    snapshot = views.snapshot
    number = did.number

    def session(
        destinations: tuple[Destination, ...], owner_peer_id: int, account_id: int, fork: bool
    ) -> DidCall:
        account = snapshot.accounts.get(account_id)
        return DidCall(
            destinations=destinations,
            fork=fork,
            max_duration=max_call_duration,
            did=did,
            delivering=delivering,
            owner_peer_id=owner_peer_id,
            owner_account_id=account_id,
            subscriber_id=did.subscriber_id,
            currency=account.currency if account else "USD",
            caller=caller,
            callee=callee,
            records=records,
        )

    if did.subscriber_id is not None:
        subscriber = snapshot.subscribers.get(did.subscriber_id)
        if subscriber is None or not subscriber.enabled:
            return Rejection(480, "Temporarily Unavailable")
        wall_now = now + records.wall_offset()
        bindings = location.lookup(subscriber.username, wall_now) if location else []
        if not bindings:
            log.debug(
                "call %s: DID %s: %s is not registered",
                request.call_id,
                number,
                subscriber.username,
            )
            return Rejection(480, "Temporarily Unavailable")
        bindings = bindings[: max(subscriber.max_contacts, 1)]
        destinations = tuple(
            Destination(
                uri=binding.contact,
                address=binding.source,
                callee=number,
                caller=caller_out,
                label=subscriber.username,
                flow=True,
            )
            for binding in bindings
        )
        return session(destinations, 0, subscriber.account_id, fork=True)

    target = snapshot.peers.get(did.peer_id or 0)
    if target is None or not target.enabled or target.address is None:
        return Rejection(480, "Temporarily Unavailable")
    owner = snapshot.accounts.get(target.account_id)
    uri = SipUri.parse(f"sip:{target.address}")
    transport = target.transport.lower()
    port = f":{uri.port}" if uri.port else ""
    suffix = f";transport={transport}" if transport != "udp" else ""
    destination = Destination(
        uri=f"sip:{number}@{format_host(uri.host)}{port}{suffix}",
        address=shared_address(transport, uri.host, uri.port or default_port(transport)),
        callee=number,
        caller=caller_out,
        label=target.name,
        # Recorded if the peer or the DID owner's account (the one billed for it) asks.
        media=target.media.recorded(owner.record if owner is not None else False),
    )
    return session((destination,), target.id, target.account_id, fork=False)
