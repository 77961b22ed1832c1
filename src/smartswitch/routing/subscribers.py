"""Subscribers on the call path: where they may come from, and billed as what.

A subscriber calling out is rated, limited and routed like a customer (issue 4): the policy
turns it into a customer :class:`~smartswitch.model.config.Peer` with the subscriber's
account, tariff and call limit. Its id is the subscriber's id negated, so the per-customer
counters never mix a subscriber with a peer; CDRs name the subscriber in ``subscriber_id``.
"""

from __future__ import annotations

from smartswitch.model.config import Peer, PeerRole, Subscriber

__all__ = ["as_customer"]


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
