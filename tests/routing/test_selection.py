"""Supplier ordering, profit control, route lookup and number rewriting."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from smartswitch.model.config import (
    Peer,
    PeerRole,
    ProfitControl,
    Rate,
    RewriteRule,
    Route,
    RouteStrategy,
    RouteSupplier,
)
from smartswitch.model.prefix import DuplicatePrefixError
from smartswitch.routing.selection import (
    Candidate,
    RewriteError,
    RouteTable,
    check_rewrite_rule,
    order_suppliers,
    passes_profit_control,
    rewrite_number,
)

D = Decimal


def supplier(peer_id: int, name: str | None = None, **changes: Any) -> Peer:
    peer = Peer(
        id=peer_id,
        name=name or f"sup{peer_id}",
        role=PeerRole.SUPPLIER,
        account_id=100 + peer_id,
        tariff_id=peer_id,
    )
    return dataclasses.replace(peer, **changes)


def rate(price: str, fee: str = "0") -> Rate:
    return Rate("44", D(price), D(fee))


def route(strategy: RouteStrategy, *entries: tuple[int, int, int]) -> Route:
    """entries: (peer id, priority, weight)."""
    return Route(
        id=1,
        prefix="44",
        strategy=strategy,
        suppliers=tuple(RouteSupplier(p, priority, weight) for p, priority, weight in entries),
    )


def order(
    the_route: Route,
    peers: list[Peer],
    prices: dict[int, Rate | None],
    customer: Rate | None = None,
    control: ProfitControl = ProfitControl.ALLOW_LOSS,
    seed: int = 0,
) -> list[int]:
    candidates = order_suppliers(
        the_route,
        {p.id: p for p in peers},
        lambda peer: prices.get(peer.id),
        customer,
        control,
        random.Random(seed),
    )
    for candidate in candidates:
        assert candidate.rate is prices[candidate.peer.id]
    return [c.peer.id for c in candidates]


PEERS = [supplier(i) for i in range(1, 6)]
PRICES: dict[int, Rate | None] = {
    1: rate("0.0300"),
    2: rate("0.0100"),
    3: rate("0.0200"),
    4: rate("0.0100", "0.0010"),
    5: rate("0.0100"),
}


# -- strategies ----------------------------------------------------------------------------


def test_priority_ascending_and_stable() -> None:
    the_route = route(RouteStrategy.PRIORITY, (1, 5, 1), (2, 1, 1), (3, 5, 1), (4, 0, 1), (5, 1, 1))
    assert order(the_route, PEERS, PRICES) == [4, 2, 5, 1, 3]


def test_least_cost() -> None:
    # 2, 4 and 5 all cost 0.0100/min: 4 has a connect fee so comes after the others, which are
    # ordered by priority (5 before 2); then 3 (0.0200) and 1 (0.0300).
    the_route = route(
        RouteStrategy.LEAST_COST, (1, 0, 1), (2, 2, 1), (3, 0, 1), (4, 0, 1), (5, 1, 1)
    )
    assert order(the_route, PEERS, PRICES) == [5, 2, 4, 3, 1]


def test_least_cost_ties_broken_by_name_not_listing() -> None:
    peers = [supplier(1, "zeta"), supplier(2, "alpha")]
    prices: dict[int, Rate | None] = {1: rate("0.01"), 2: rate("0.01")}
    assert order(route(RouteStrategy.LEAST_COST, (1, 0, 1), (2, 0, 1)), peers, prices) == [2, 1]
    assert order(route(RouteStrategy.LEAST_COST, (2, 0, 1), (1, 0, 1)), peers, prices) == [2, 1]


def test_weighted_is_reproducible_with_a_seed() -> None:
    the_route = route(RouteStrategy.WEIGHTED, (1, 0, 1), (2, 0, 2), (3, 0, 3), (5, 0, 4))
    first = order(the_route, PEERS, PRICES, seed=1234)
    assert sorted(first) == [1, 2, 3, 5]
    assert all(order(the_route, PEERS, PRICES, seed=1234) == first for _ in range(5))
    orders = {tuple(order(the_route, PEERS, PRICES, seed=s)) for s in range(50)}
    assert len(orders) > 1


def test_weighted_first_choice_follows_the_weights() -> None:
    the_route = route(RouteStrategy.WEIGHTED, (1, 0, 1), (2, 0, 3), (3, 0, 6))
    peers = {p.id: p for p in PEERS}
    rng = random.Random(7)
    trials = 20_000
    firsts: Counter[int] = Counter()
    for _ in range(trials):
        candidates = order_suppliers(
            the_route, peers, lambda p: PRICES[p.id], None, ProfitControl.ALLOW_LOSS, rng
        )
        firsts[candidates[0].peer.id] += 1
    for peer_id, share in ((1, 0.1), (2, 0.3), (3, 0.6)):
        assert abs(firsts[peer_id] / trials - share) < 0.015


def test_weight_zero_is_a_last_resort() -> None:
    the_route = route(RouteStrategy.WEIGHTED, (1, 9, 0), (2, 0, 5), (3, 1, 0), (5, 0, 5))
    for seed in range(20):
        ids = order(the_route, PEERS, PRICES, seed=seed)
        assert set(ids[:2]) == {2, 5}
        assert ids[2:] == [3, 1]  # by priority


# -- what is dropped -----------------------------------------------------------------------


def test_drops_unusable_suppliers() -> None:
    peers = [
        supplier(1),
        supplier(2, enabled=False),
        supplier(3, role=PeerRole.CUSTOMER),
        supplier(4, role=PeerRole.BOTH),
        supplier(5),
    ]
    prices: dict[int, Rate | None] = {
        1: rate("0.01"),
        2: rate("0.01"),
        3: rate("0.01"),
        4: rate("0.01"),
    }
    the_route = route(
        RouteStrategy.PRIORITY,
        (1, 0, 1),
        (2, 0, 1),  # disabled
        (3, 0, 1),  # a customer only
        (4, 0, 1),  # customer and supplier: fine
        (5, 0, 1),  # no buying rate for the destination
        (9, 0, 1),  # not in the configuration
        (1, 5, 1),  # listed twice: the first entry counts
    )
    assert order(the_route, peers, prices) == [1, 4]


def test_empty_route() -> None:
    assert order(route(RouteStrategy.LEAST_COST), PEERS, PRICES) == []


# -- profit control ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "buying", "selling", "allowed"),
    [
        (ProfitControl.ALLOW_LOSS, "0.0200", "0.0100", True),
        (ProfitControl.ALLOW_LOSS, "0.0200", None, True),
        (ProfitControl.NO_LOSS, "0.0099", "0.0100", True),
        (ProfitControl.NO_LOSS, "0.0100", "0.0100", True),  # break-even is not a loss
        (ProfitControl.NO_LOSS, "0.0101", "0.0100", False),
        (ProfitControl.NO_LOSS, "0.0100", None, False),  # unknown margin: refuse
        (ProfitControl.PROFIT_ONLY, "0.0099", "0.0100", True),
        (ProfitControl.PROFIT_ONLY, "0.0100", "0.0100", False),
        (ProfitControl.PROFIT_ONLY, "0.0101", "0.0100", False),
        (ProfitControl.PROFIT_ONLY, "0.0001", None, False),
    ],
)
def test_passes_profit_control(
    control: ProfitControl, buying: str, selling: str | None, allowed: bool
) -> None:
    selling_rate = None if selling is None else rate(selling)
    assert passes_profit_control(rate(buying), selling_rate, control) is allowed


def test_profit_control_filters_candidates() -> None:
    the_route = route(RouteStrategy.LEAST_COST, (1, 0, 1), (2, 0, 1), (3, 0, 1))
    customer = rate("0.0200")
    assert order(the_route, PEERS, PRICES, customer, ProfitControl.ALLOW_LOSS) == [2, 3, 1]
    assert order(the_route, PEERS, PRICES, customer, ProfitControl.NO_LOSS) == [2, 3]
    assert order(the_route, PEERS, PRICES, customer, ProfitControl.PROFIT_ONLY) == [2]
    assert order(the_route, PEERS, PRICES, None, ProfitControl.NO_LOSS) == []


def test_candidate_carries_peer_and_rate() -> None:
    candidates = order_suppliers(
        route(RouteStrategy.PRIORITY, (2, 0, 1)),
        {p.id: p for p in PEERS},
        lambda p: PRICES[p.id],
        None,
        ProfitControl.ALLOW_LOSS,
        random.Random(0),
    )
    assert candidates == [Candidate(PEERS[1], rate("0.0100"))]


# -- route table ---------------------------------------------------------------------------


def test_route_table_longest_prefix() -> None:
    default = Route(1, "", RouteStrategy.PRIORITY, ())
    uk = Route(2, "44", RouteStrategy.LEAST_COST, ())
    uk_mobile = Route(3, "447", RouteStrategy.WEIGHTED, ())
    table = RouteTable([default, uk, uk_mobile])
    assert len(table) == 3
    assert table.lookup("447946") == uk_mobile
    assert table.lookup("4420") == uk
    assert table.lookup("1212") == default
    assert list(table.matches("447946")) == [uk_mobile, uk, default]


def test_route_table_without_default() -> None:
    table = RouteTable([Route(2, "44", RouteStrategy.PRIORITY, ())])
    assert table.lookup("33") is None


def test_route_table_refuses_duplicate_prefixes() -> None:
    with pytest.raises(DuplicatePrefixError):
        RouteTable(
            [Route(1, "44", RouteStrategy.PRIORITY, ()), Route(2, "44", RouteStrategy.PRIORITY, ())]
        )


# -- number rewriting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "rules", "expected"),
    [
        ("+442079460000", [(r"^\+", "")], "442079460000"),
        ("00442079460000", [(r"^00", "")], "442079460000"),
        ("02079460000", [(r"^0(?=[1-9])", "44")], "442079460000"),
        ("442079460000", [(r"^(44)(\d+)$", r"\g<1>0\2")], "4402079460000"),
        ("442079460000", [(r"^33", "")], "442079460000"),  # no match: unchanged
        ("1111", [("1", "2")], "2111"),  # count=1: only the first occurrence
        ("+0044123", [(r"^\+", ""), (r"^00", ""), (r"^", "9#")], "9#44123"),  # rules chain
        ("44123", [], "44123"),
    ],
)
def test_rewrite_number(number: str, rules: list[tuple[str, str]], expected: str) -> None:
    assert rewrite_number(number, [RewriteRule(m, r) for m, r in rules]) == expected


def test_rewrite_accepts_a_tuple_of_rules() -> None:
    rules = (RewriteRule(r"^\+", ""), RewriteRule("^", "00"))
    assert rewrite_number("+33123", rules) == "0033123"


@pytest.mark.parametrize(
    "rule",
    [RewriteRule("(", ""), RewriteRule("^44", r"\1"), RewriteRule("[", "x")],
)
def test_invalid_rewrite_rules(rule: RewriteRule) -> None:
    with pytest.raises(RewriteError) as info:
        check_rewrite_rule(rule)
    assert info.value.rule == rule
    with pytest.raises(RewriteError):
        rewrite_number("44123", [rule])


def test_valid_rewrite_rule_passes_the_check() -> None:
    check_rewrite_rule(RewriteRule(r"^(\d{2})(\d+)$", r"\2\1"))
