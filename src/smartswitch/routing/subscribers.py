"""Subscribers on the call path: where they may come from, and billed as what.

A subscriber calling out is rated, limited and routed like a customer (issue 4): the policy
turns it into a customer :class:`~smartswitch.routing.model.Peer` with the subscriber's
account, tariff and call limit. Its id is the subscriber's id negated, so the per-customer
counters never mix a subscriber with a peer; CDRs name the subscriber in ``subscriber_id``.
"""

from __future__ import annotations

import ipaddress

from smartswitch.routing.model import Peer, PeerRole, Subscriber

__all__ = ["as_customer", "source_allowed"]


def source_allowed(subscriber: Subscriber, ip: str) -> bool:
    """Whether ``ip`` is in the subscriber's ``allowed_cidrs`` (no list: every address is)."""
    networks = subscriber.allowed_cidrs
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # what a dual-stack socket reports for an IPv4 sender
    return any(address in network for network in networks)


def as_customer(subscriber: Subscriber) -> Peer:
    """The customer a subscriber is billed and limited as when it calls out."""
    return Peer(
        id=-subscriber.id,
        name=f"subscriber:{subscriber.username}",
        role=PeerRole.CUSTOMER,
        account_id=subscriber.account_id,
        tariff_id=subscriber.tariff_id,
        max_calls=subscriber.max_calls,
        enabled=subscriber.enabled,
    )
