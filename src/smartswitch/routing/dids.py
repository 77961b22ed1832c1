"""Calls to our DIDs: from a peer that delivers DIDs to the DID's owner.

Only a peer flagged ``deliver_dids`` (recognised by its ACL) can deliver a DID call; an INVITE
for a DID number from anywhere else is an ordinary call, identified (or refused) as usual.

* DID -> subscriber: every live binding of the subscriber is called at once (RouteDecision
  ``fork=True``, first answer wins, the others CANCELled); each B leg's Request-URI is the
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
from datetime import datetime
from decimal import Decimal

from smartswitch.b2bua.call import Call
from smartswitch.b2bua.ports import Destination, Rejection, RouteDecision
from smartswitch.model.cdr import CdrRecord, HangupSide
from smartswitch.model.config import Did, Peer
from smartswitch.model.ids import new_ulid
from smartswitch.registrar.location import LocationService
from smartswitch.routing.selection import rewrite_number
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address
from smartswitch.sip.uri import SipUri, format_host

__all__ = ["DidCallContext", "did_cdr", "route_did"]

log = logging.getLogger("smartswitch.routing")

ZERO = Decimal("0.0000")


@dataclass(slots=True)
class DidCallContext:
    """The policy's data for a DID call (``RouteDecision.context``)."""

    did: Did
    delivering: Peer
    owner_peer_id: int  # 0 for a subscriber
    owner_account_id: int
    subscriber_id: int | None
    currency: str
    caller: str
    callee: str


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
    wall_now: float,
    max_call_duration: float,
) -> RouteDecision | Rejection | None:
    """The decision for a DID call, or None when the INVITE is not one (go on as usual)."""
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
    if did.subscriber_id is not None:
        subscriber = snapshot.subscribers.get(did.subscriber_id)
        if subscriber is None or not subscriber.enabled:
            return Rejection(480, "Temporarily Unavailable")
        bindings = location.lookup(subscriber.username, wall_now) if location else []
        if not bindings:
            log.info(
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
                context=binding,
                flow=True,
            )
            for binding in bindings
        )
        account = snapshot.accounts.get(subscriber.account_id)
        context = DidCallContext(
            did=did,
            delivering=delivering,
            owner_peer_id=0,
            owner_account_id=subscriber.account_id,
            subscriber_id=subscriber.id,
            currency=account.currency if account else "USD",
            caller=caller,
            callee=callee,
        )
        return RouteDecision(destinations, max_call_duration, context, fork=True)

    target = snapshot.peers.get(did.peer_id or 0)
    if target is None or not target.enabled or target.address is None:
        return Rejection(480, "Temporarily Unavailable")
    uri = SipUri.parse(f"sip:{target.address}")
    transport = target.transport.lower()
    port = f":{uri.port}" if uri.port else ""
    suffix = f";transport={transport}" if transport != "udp" else ""
    account = snapshot.accounts.get(target.account_id)
    context = DidCallContext(
        did=did,
        delivering=delivering,
        owner_peer_id=target.id,
        owner_account_id=target.account_id,
        subscriber_id=None,
        currency=account.currency if account else "USD",
        caller=caller,
        callee=callee,
    )
    destination = Destination(
        uri=f"sip:{number}@{format_host(uri.host)}{port}{suffix}",
        address=Address(transport, uri.host, uri.port or 5060),
        callee=number,
        caller=caller_out,
        label=target.name,
        context=target,
    )
    return RouteDecision((destination,), max_call_duration, context)


def did_cdr(
    call: Call, context: DidCallContext, node: str, wall: Callable[[float], datetime]
) -> CdrRecord:
    """The CDR of a finished DID call (not rated: see the module docstring)."""
    last = call.attempts[-1].destination if call.attempts else None
    end = call.end_time if call.end_time is not None else call.setup_time
    return CdrRecord(
        id=new_ulid(),
        call_id=call.id,
        node=node,
        customer_peer_id=context.owner_peer_id,
        customer_account_id=context.owner_account_id,
        caller=context.caller,
        callee=context.callee,
        caller_out=last.caller if last else context.caller,
        callee_out=last.callee if last else context.did.number,
        setup_time=wall(call.setup_time),
        answer_time=wall(call.answer_time) if call.answer_time is not None else None,
        end_time=wall(end),
        duration_ms=round(call.duration * 1000),
        billed_seconds=0,
        price=ZERO,
        cost=ZERO,
        currency=context.currency,
        sip_code=call.final_status or 0,
        sip_reason=call.final_reason,
        hangup_side=HangupSide(str(call.hangup_side or "switch")),
        hangup_reason=call.hangup_reason,
        supplier_peer_id=context.delivering.id,
        supplier_account_id=context.delivering.account_id,
        subscriber_id=context.subscriber_id,
    )
