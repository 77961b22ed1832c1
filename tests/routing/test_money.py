"""The billing policy on a cluster node: new calls and slices granted against what every node
holds, the minimum grant, the account's own slice. The policy's own helpers drive it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from smartswitch.billing.reservations import ClusterLedger, Holding, Reservations
from smartswitch.routing.policy import BillingCall, BillingPolicy
from smartswitch.routing.views import ConfigViews

from .test_policy import (
    ACME,
    CALLER,
    NOW,
    _rate,
    answer,
    invite,
    make_policy,
    new_call,
    refused,
    routed,
    snapshot,
)

D = Decimal
RATE = (_rate("1", "0.6000", "1/1"),)  # 0.01 a second


def _clustered(
    balance: str = "1.0000",
    *,
    credit: str = "0",
    reserve_seconds: int = 30,
    min_grant: int = 10,
    account_slice: int | None = None,
) -> tuple[BillingPolicy, ClusterLedger]:
    snap = snapshot(balance=balance, credit=credit, retail=RATE)
    if account_slice is not None:
        accounts = dict(snap.accounts)
        accounts[ACME] = replace(accounts[ACME], reserve_seconds=account_slice)
        snap = replace(snap, accounts=accounts)
    policy, accounting, _ = make_policy(snap, reserve_seconds=reserve_seconds)
    policy.update(ConfigViews.build(snap))
    ledger = ClusterLedger("node1", accounting)
    ledger.expect(["node1", "node2"], NOW)
    ledger.receive(Reservations("node2", 1.0, 1, {}), NOW)
    policy.ledger = ledger
    policy.min_grant_seconds = min_grant
    return policy, ledger


def _calls_granted(policy: BillingPolicy, now: float = NOW) -> list[float]:
    """Route new calls until one is refused; the time each was granted."""
    granted = []
    for _ in range(50):
        session = policy.route(invite(), CALLER, now)
        if not isinstance(session, BillingCall):
            break
        granted.append(session.max_duration)
    return granted


def test_a_new_call_gets_a_slice_then_what_is_left_down_to_the_minimum() -> None:
    """1.00 at 0.01/s, 30 s slices, 10 s minimum: 3 calls of 30 s (0.90), a fourth of 10 s
    (0.10), then 402: four calls, as the settings promise."""
    policy, _ = _clustered()
    assert _calls_granted(policy) == [30, 30, 30, 10]
    assert refused(policy).status == 402


def test_less_than_the_minimum_left_is_refused() -> None:
    policy, _ = _clustered(balance="0.0900")  # 9 s: under the 10 s minimum
    assert refused(policy).status == 402
    policy, _ = _clustered(balance="0.0900", min_grant=5)
    assert _calls_granted(policy) == [9]


def test_the_minimum_never_exceeds_the_slice() -> None:
    policy, _ = _clustered(balance="0.0500", reserve_seconds=2, min_grant=10)
    assert _calls_granted(policy) == [2, 2]  # 0.04 held; 1 s left is under a 2 s slice


def test_the_account_slice_overrides_the_nodes() -> None:
    policy, _ = _clustered(account_slice=20)
    assert _calls_granted(policy) == [20, 20, 20, 20, 20]


def test_another_nodes_holdings_leave_less_to_grant() -> None:
    policy, ledger = _clustered()
    ledger.receive(Reservations("node2", 1.0, 2, {ACME: Holding(D("0.5000"), D("0.2000"))}), NOW)
    assert _calls_granted(policy) == [30]  # 0.30 left: one slice
    ledger.receive(Reservations("node2", 1.0, 3, {}), NOW)  # node2's calls ended unbilled
    assert _calls_granted(policy) == [30, 30, 10]  # 0.70 left beside this node's first call


def test_postpaid_accounts_grant_against_their_limit_the_same_way() -> None:
    policy, ledger = _clustered(balance="0", credit="0.6000")
    ledger.receive(Reservations("node2", 1.0, 2, {ACME: Holding(D("0.3000"), D(0))}), NOW)
    assert _calls_granted(policy) == [30]


def test_extension_takes_what_is_left_once_others_hold_the_rest() -> None:
    policy, ledger = _clustered()
    request = invite()
    call = new_call(request, routed(policy, request))
    answer(call)
    # node2's finished calls cost 0.65, not yet replicated (it has no call to extend).
    ledger.receive(Reservations("node2", 1.0, 2, {ACME: Holding(D(0), D("0.6500"))}), NOW)
    # 1.00 - 0.30 (this call) - 0.65 = 0.05 more: 5 s, under the minimum but the call is up.
    assert call.session.extend(NOW + 1) == 5
    assert call.session.extend(NOW + 2) == 0


def test_a_partition_keeps_a_node_to_its_share() -> None:
    policy, ledger = _clustered()
    # node2 goes silent: after stale_after this node may use half of what was left (0.50).
    assert _calls_granted(policy, NOW + 4) == [30, 20]
    assert ledger.whole(NOW + 4) is False
    # node2 is heard again, holding nothing: the rest of the balance is usable again.
    ledger.receive(Reservations("node2", 1.0, 2, {}), NOW + 5)
    assert _calls_granted(policy, NOW + 5) == [30, 20]


def test_extensions_on_several_nodes_take_an_equal_part_of_what_is_left() -> None:
    """Calls started together on three nodes reach their slice ends together: each node
    extends by at most a third of what is left (at least one increment), so together they
    cannot take more than is left."""
    policy, ledger = _clustered()
    ledger.expect(["node1", "node2", "node3"], NOW)
    request = invite()
    call = new_call(request, routed(policy, request))  # 30 s, 0.30
    answer(call)
    held = {ACME: Holding(D("0.3000"), D(0))}
    ledger.receive(Reservations("node2", 1.0, 2, held), NOW)
    ledger.receive(Reservations("node3", 1.0, 1, held), NOW)
    assert ledger.contenders(ACME, NOW) == 3
    # 0.10 left, three contenders: 0.0333 -> 3 s, not the 10 s a lone node would take.
    assert call.session.extend(NOW + 1) == 3
    # 0.07 left: 0.0233 -> 2 s; then a third of 0.05, 0.04, 0.03: 1 s each; 0.02 and 0.01:
    # a third is under one increment, which is what is taken.
    assert [call.session.extend(NOW + 2) for _ in range(7)] == [2, 1, 1, 1, 1, 1, 0]
    # Alone (the others hold nothing), a node takes a whole slice.
    policy2, ledger2 = _clustered()
    request = invite()
    call2 = new_call(request, routed(policy2, request))
    answer(call2)
    assert ledger2.contenders(ACME, NOW) == 1
    assert call2.session.extend(NOW + 1) == 30
