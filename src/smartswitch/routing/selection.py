"""Route selection: which suppliers a call is offered to, in which order, and number rewriting.

Pure logic over the configuration values of :mod:`smartswitch.model.config`.  The B2BUA asks
:class:`RouteTable` for the route of the (rewritten) destination, then :func:`order_suppliers`
for the failover list, and tries the candidates in that order until one answers.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from smartswitch.model.config import (
    Peer,
    ProfitControl,
    Rate,
    RewriteRule,
    Route,
    RouteStrategy,
    RouteSupplier,
)
from smartswitch.model.prefix import PrefixTable

__all__ = [
    "Candidate",
    "RewriteError",
    "RouteTable",
    "check_rewrite_rule",
    "order_suppliers",
    "passes_profit_control",
    "rewrite_number",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A supplier the call may be sent to, with the rate it charges us (the buying rate)."""

    peer: Peer
    rate: Rate


def passes_profit_control(
    buying: Rate, selling: Rate | None, profit_control: ProfitControl
) -> bool:
    """Whether sending a call bought at ``buying`` and sold at ``selling`` is allowed.

    Compared on the price per minute alone: connect fees and increments differ in ways that
    depend on the call's length, which is unknown when it is routed, and carriers state
    profit rules per minute.  Both rates are assumed to be in the same currency.

    - allow_loss: every supplier is allowed.
    - no_loss: the supplier may cost as much as we sell for, not more.
    - profit_only: the supplier must cost strictly less than we sell for.

    Without a selling rate the margin cannot be known, so anything but allow_loss refuses:
    failing closed never loses money silently.
    """
    if profit_control is ProfitControl.ALLOW_LOSS:
        return True
    if selling is None:
        return False
    if profit_control is ProfitControl.NO_LOSS:
        return buying.price_per_minute <= selling.price_per_minute
    return buying.price_per_minute < selling.price_per_minute


def _weighted_order(
    entries: Sequence[tuple[RouteSupplier, Candidate]], rng: random.Random
) -> list[tuple[RouteSupplier, Candidate]]:
    """A random order in which each entry comes first with probability weight / total weight.

    Weighted sampling without replacement (Efraimidis and Spirakis, 2006): each entry draws
    ``u ** (1 / weight)`` with ``u`` uniform in [0, 1) and the entries are sorted by that key,
    largest first.  One ``rng.random()`` per entry, in route order, so the same seed gives the
    same order.  Entries of weight 0 (or less) take no share of the traffic but stay usable as a
    last resort: they follow the weighted ones, by priority.
    """
    weighted: list[tuple[float, int, tuple[RouteSupplier, Candidate]]] = []
    unweighted: list[tuple[RouteSupplier, Candidate]] = []
    for index, entry in enumerate(entries):
        weight = entry[0].weight
        if weight > 0:
            weighted.append((rng.random() ** (1.0 / weight), index, entry))
        else:
            unweighted.append(entry)
    weighted.sort(key=lambda item: (-item[0], item[1]))
    unweighted.sort(key=lambda entry: entry[0].priority)
    return [entry for _, _, entry in weighted] + unweighted


def order_suppliers(
    route: Route,
    suppliers: Mapping[int, Peer],
    buying_rate: Callable[[Peer], Rate | None],
    customer_rate: Rate | None,
    profit_control: ProfitControl,
    rng: random.Random,
) -> list[Candidate]:
    """The failover list for a call on ``route``: the suppliers to try, first one first.

    ``suppliers`` maps peer id to peer (the snapshot's peers); ``buying_rate`` gives a supplier's
    rate for this call's destination (None: the supplier does not carry it); ``customer_rate`` is
    what the caller pays per minute, for ``profit_control`` (see :func:`passes_profit_control`).

    Dropped: route entries naming an unknown peer, a disabled peer or one that is not a supplier
    by role, a repeated peer (its first entry counts), suppliers without a buying rate, and
    those that fail profit control.  Then ordered by the route's strategy:

    - priority: ascending ``priority``; ties keep the order the route lists them in.
    - least_cost: ascending buying price per minute, then connect fee (the cheaper per-call
      cost first), then priority, then peer name and id so the order never depends on listing.
    - weighted: a random order, each supplier first with probability proportional to its
      weight, drawn from ``rng`` (pass a seeded ``random.Random`` to reproduce it).
    """
    seen: set[int] = set()
    kept: list[tuple[RouteSupplier, Candidate]] = []
    for entry in route.suppliers:
        if entry.peer_id in seen:
            continue
        seen.add(entry.peer_id)
        peer = suppliers.get(entry.peer_id)
        if peer is None or not peer.enabled or not peer.is_supplier:
            continue
        rate = buying_rate(peer)
        if rate is None or not passes_profit_control(rate, customer_rate, profit_control):
            continue
        kept.append((entry, Candidate(peer, rate)))

    if route.strategy is RouteStrategy.LEAST_COST:
        kept.sort(
            key=lambda item: (
                item[1].rate.price_per_minute,
                item[1].rate.connect_fee,
                item[0].priority,
                item[1].peer.name,
                item[1].peer.id,
            )
        )
    elif route.strategy is RouteStrategy.WEIGHTED:
        kept = _weighted_order(kept, rng)
    else:  # PRIORITY; list.sort is stable, so equal priorities keep the route's order
        kept.sort(key=lambda item: item[0].priority)
    return [candidate for _, candidate in kept]


class RouteTable:
    """The routes of a configuration, found by longest prefix of the destination number.

    Two routes with the same prefix are refused (:class:`~smartswitch.model.prefix.
    DuplicatePrefixError`): which one a call takes would be ambiguous.
    """

    __slots__ = ("_table",)

    def __init__(self, routes: Iterable[Route]) -> None:
        self._table: PrefixTable[Route] = PrefixTable((r.prefix, r) for r in routes)

    def lookup(self, number: str) -> Route | None:
        """The route with the longest prefix of ``number``; None: no route (the call fails)."""
        return self._table.lookup(number)

    def matches(self, number: str) -> Iterator[Route]:
        """Every route whose prefix starts ``number``, longest prefix first."""
        for _prefix, route in self._table.matches(number):
            yield route

    def __len__(self) -> int:
        return len(self._table)


class RewriteError(ValueError):
    """A rewrite rule whose pattern or replacement is not valid, with the reason."""

    def __init__(self, rule: RewriteRule, reason: str) -> None:
        super().__init__(f"rewrite {rule.match!r} -> {rule.replace!r}: {reason}")
        self.rule = rule


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_rewrite_rule(rule: RewriteRule) -> None:
    """Raise :class:`RewriteError` unless ``rule`` compiles and its replacement refers only to
    groups the pattern has; for the configuration forms, so a bad rule never reaches a call."""
    try:
        _compile(rule.match).sub(rule.replace, "", count=1)
    except re.error as exc:
        raise RewriteError(rule, str(exc)) from exc


def rewrite_number(number: str, rules: Sequence[RewriteRule]) -> str:
    """Apply each rule in order, each as ``re.sub(match, replace, number, count=1)``.

    Rules chain: each one sees the number the previous one produced.  Patterns are compiled
    once and cached.  A rule that does not match leaves the number unchanged.  An invalid rule
    raises :class:`RewriteError` (use :func:`check_rewrite_rule` when the rule is saved).
    """
    for rule in rules:
        try:
            number = _compile(rule.match).sub(rule.replace, number, count=1)
        except re.error as exc:
            raise RewriteError(rule, str(exc)) from exc
    return number
