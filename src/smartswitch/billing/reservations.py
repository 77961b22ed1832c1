"""Money across nodes: what every node holds of each account, and what is left to grant.

Sans-IO: publications and ``now`` (the node's monotonic clock) in, amounts out. The asyncio
side (publishing on the cluster bus, taking the others' publications) is
:mod:`smartswitch.runtime.money`.

Theory of operation
-------------------
Each node's :class:`~smartswitch.billing.accounting.Accounting` knows, per account, what its
own calls in progress have *reserved* and what its finished calls cost that the replicated
balance does not show yet (*unconfirmed*). Alone, a node sees only its own: an account could
spend its balance once per node. So every node publishes its holdings (:class:`Reservations`,
the whole table each time, numbered by ``(epoch, seq)``) at once when they change and with every
heartbeat, and each node grants against::

    available = balance + credit limit - own holdings - sum of the other nodes' holdings

where the balance is this node's replica of the primary's. An older publication (a smaller
``seq`` of the same process, or one of an earlier process of that node) never replaces a newer
one, so updates that cross on the way cannot bring back an old amount. The last holdings of a
node not heard any more are still counted: its calls may still be running.

**Calls extending together.** Calls of one account started together on several nodes reach
the ends of their slices together, each node seeing the same money left before it hears what
the others just took. So a slice extension takes at most an equal part of what is left among
the *contenders* (this node and the live nodes holding reservations of the account), but at
least one billing block: together they take no more than is left, plus one block per call.
New calls are not split so (a whole slice each, down to the minimum grant): two new calls on
two nodes within the time a publication takes to arrive (milliseconds, ``bench/money.py``)
may both count the same money, at most one slice each.

**Partition.** A node is *live* when heard within ``stale_after`` seconds. While every known
node is live, the cluster is *whole* and the rule above is all. When some are not, this node and
the live ones (its *group*, ``L``) may together use only their share of the money that was left
when the group shrank; the missing nodes are doing the same on their side. At that moment the
ledger takes, per account, a budget::

    allowance = share(L) * max(0, available at that moment)
    share(L)  = |L| / |S|          (S: the nodes known when the cluster was last whole; or
                                    |L| * money_share when that setting is given, at most 1)

and from then on grants only while::

    (holdings of L now - holdings of L then) + max(0, balance then - balance now) <= allowance

i.e. the group's new reservations and charges, counting every charge confirmed since (its own
and, conservatively, the other side's) as spent by it. ``available`` is the smaller of the
normal rule and what this budget leaves. If the group shrinks again, the budget left is split
again in proportion (``|L'| / |L|``); when it grows without healing the budget is kept; when
every node is live again the budgets are dropped and the normal rule is back.

**The worst overspend.** With equal shares, the groups' shares add up to at most 1, so during a
partition that all sides see at the same moment the cluster together takes at most the money
that was available: no overspend from the partition itself. What can be overspent is what
nodes grant *before* they notice: a node keeps granting on its last view of a peer for up to
``stale_after`` seconds after the peer's last publication. With ``n`` nodes in ``k`` groups and
``A`` the money available at the cut, the worst case is every group granting against the whole
of ``A`` in that window::

    overspend <= (k - 1) * min(A, g * stale_after * slice_cost) + calls in progress * increment

where ``g`` is the call attempts per second an account's callers can place on one group and
``slice_cost`` the price of one reservation slice (each call takes at most one slice before it
is next extended); the last term is the rounding of each call's last billing block, which
every call in progress may cost on any rule. Outside partitions, the same window is the time a
publication takes to reach the others (measured in ``bench/money.py``). A top-up made during
a partition is only counted as far as it covers charges confirmed during it (conservative).

The node list comes from the cluster's nodes table (:meth:`ClusterLedger.expect`). A node at
start has heard nobody: it is a group of one, on its share, until the others are heard (within
one heartbeat). A node removed for good must leave the nodes table, or the others keep it as
missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from typing import Any

from smartswitch.billing.accounting import ZERO, Accounting
from smartswitch.model.money import AMOUNT_SCALE

__all__ = [
    "RESERVATIONS_VERSION",
    "Budget",
    "ClusterLedger",
    "Holding",
    "NodeHolding",
    "Reservations",
]

RESERVATIONS_VERSION = 1
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


@dataclass(frozen=True, slots=True)
class Holding:
    """What one node holds of one account."""

    reserved: Decimal
    """The price of the time granted to its calls in progress."""
    unconfirmed: Decimal
    """Its finished calls' charges not yet in its replica's balance."""

    @property
    def total(self) -> Decimal:
        return self.reserved + self.unconfirmed


_NOTHING = Holding(ZERO, ZERO)


def _amount(value: Any, what: str) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{what}: an amount is a decimal string, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what}: not a decimal: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{what}: not a finite amount: {value!r}")
    return amount


@dataclass(frozen=True, slots=True)
class Reservations:
    """One node's publication: its holdings of every account it holds anything of (an account
    left out holds nothing), numbered so that an older one never replaces a newer."""

    node: str
    epoch: float
    """When the publishing process started (its wall clock): a restart starts a new epoch."""
    seq: int
    """Counts up within one epoch."""
    accounts: Mapping[int, Holding]
    changed_at: float | None = None
    """The publisher's wall clock at the earliest change this publication is the first to
    carry to its recipient (None: nothing new, a periodic one): how long a grant takes to be
    seen elsewhere is measured from it (``bench/money.py``)."""

    def newer_than(self, other: Reservations) -> bool:
        return (self.epoch, self.seq) > (other.epoch, other.seq)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": RESERVATIONS_VERSION,
            "node": self.node,
            "epoch": self.epoch,
            "seq": self.seq,
            "accounts": {
                str(a): [str(h.reserved), str(h.unconfirmed)] for a, h in self.accounts.items()
            },
        }
        if self.changed_at is not None:
            data["changed_at"] = self.changed_at
        return data

    @classmethod
    def from_json(cls, data: Any) -> Reservations:
        """The publication in ``data``; :class:`ValueError` if it is not one we can read."""
        if not isinstance(data, Mapping):
            raise ValueError("a reservations message is a JSON object")
        if data.get("v") != RESERVATIONS_VERSION:
            raise ValueError(f"reservations version {data.get('v')!r}, this node reads 1")
        node, epoch, seq = data.get("node"), data.get("epoch"), data.get("seq")
        if not isinstance(node, str) or not node:
            raise ValueError("reservations: 'node' is a non-empty string")
        if isinstance(epoch, bool) or not isinstance(epoch, int | float):
            raise ValueError("reservations: 'epoch' is a number")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("reservations: 'seq' is a non-negative integer")
        raw = data.get("accounts")
        if not isinstance(raw, Mapping):
            raise ValueError("reservations: 'accounts' is an object")
        accounts: dict[int, Holding] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key.isdigit():
                raise ValueError(f"reservations: account id {key!r} is not a number")
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError(f"reservations: account {key}: [reserved, unconfirmed]")
            accounts[int(key)] = Holding(
                _amount(value[0], f"account {key} reserved"),
                _amount(value[1], f"account {key} unconfirmed"),
            )
        changed_at = data.get("changed_at")
        if changed_at is not None and (
            isinstance(changed_at, bool) or not isinstance(changed_at, int | float)
        ):
            raise ValueError("reservations: 'changed_at' is a number")
        return cls(
            node,
            float(epoch),
            seq,
            accounts,
            None if changed_at is None else float(changed_at),
        )


@dataclass(frozen=True, slots=True)
class NodeHolding:
    """One node's holding of one account as this node sees it (the UI's row)."""

    node: str
    holding: Holding
    live: bool
    own: bool


@dataclass(slots=True)
class Budget:
    """What the group may still take of one account during a partition (see the module)."""

    allowance: Decimal
    group_then: Decimal
    balance_then: Decimal

    def left(self, group_now: Decimal, balance_now: Decimal) -> Decimal:
        spent = group_now - self.group_then + max(ZERO, self.balance_then - balance_now)
        return self.allowance - spent


def _part(amount: Decimal, numerator: int, denominator: int) -> Decimal:
    """``amount * numerator / denominator`` rounded down to the amount quantum (never more
    than the share)."""
    if amount <= 0:
        return ZERO
    with localcontext() as ctx:
        ctx.prec = 60
        return (amount * numerator / denominator).quantize(_QUANTUM, rounding=ROUND_FLOOR)


class ClusterLedger:
    """Every node's holdings, and the money this node may still grant (see the module).

    ``accounting`` is this node's own; ``stale_after`` the seconds after which a node not
    heard is missing (the membership's ``down_after``); ``money_share`` the fraction of the
    money each node may use in a partition (0: an equal share among the nodes last seen whole).
    """

    def __init__(
        self,
        node: str,
        accounting: Accounting,
        *,
        stale_after: float = 3.0,
        money_share: float = 0.0,
    ) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after is positive")
        if not 0 <= money_share <= 1:
            raise ValueError("money_share is a fraction between 0 (equal shares) and 1")
        self.node = node
        self.accounting = accounting
        self.stale_after = stale_after
        self.money_share = money_share
        self._expected: set[str] = set()
        self._last: dict[str, Reservations] = {}
        self._heard: dict[str, float] = {}
        self._group: frozenset[str] = frozenset({node})  # live nodes at the last settle
        self._whole_members: frozenset[str] = frozenset({node})  # S: last seen whole
        self._whole = True
        self._budgets: dict[int, Budget] = {}

    # --- the nodes ------------------------------------------------------------------------

    def expect(self, names: Iterable[str], now: float) -> None:
        """The cluster's nodes (this one may be among them). A node no longer listed is
        forgotten with its holdings."""
        expected = set(names) - {self.node}
        for gone in self._expected - expected:
            self._last.pop(gone, None)
            self._heard.pop(gone, None)
        self._expected = expected
        self.settle(now)

    def receive(self, publication: Reservations, now: float) -> bool:
        """Take another node's publication; False (ignored) for our own or an old one."""
        name = publication.node
        if name == self.node:
            return False
        last = self._last.get(name)
        if last is not None and not publication.newer_than(last):
            return False
        self._last[name] = publication
        self._heard[name] = now
        self._expected.add(name)  # a node just added, not in our copy of the table yet
        self.settle(now)
        return True

    def heard(self, name: str, now: float) -> None:
        """``name`` is alive (a heartbeat without holdings, from the membership)."""
        if name != self.node and name in self._last:
            self._heard[name] = now

    def contenders(self, account_id: int, now: float) -> int:
        """This node and the live ones holding reservations of the account: the nodes that may
        be extending its calls at this moment (a call's slice extension takes at most an equal
        part of what is left; see ``BillingCall.extend``)."""
        live = self.live(now)
        return 1 + sum(
            1
            for name, publication in self._last.items()
            if name in live and publication.accounts.get(account_id, _NOTHING).reserved > 0
        )

    def members(self) -> list[str]:
        return sorted(self._expected | {self.node})

    def live(self, now: float) -> frozenset[str]:
        """This node and the nodes heard within ``stale_after``."""
        return frozenset(
            {self.node}
            | {n for n in self._expected if now - self._heard.get(n, -1e18) <= self.stale_after}
        )

    def whole(self, now: float) -> bool:
        self.settle(now)
        return self._whole

    def next_deadline(self) -> float | None:
        """When the first live peer turns missing if not heard before."""
        deadlines = [self._heard[n] + self.stale_after for n in self._group if n in self._heard]
        return min(deadlines, default=None)

    # --- partitions -----------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Follow the live set: a budget per account when it shrinks, none once whole."""
        group = self.live(now)
        if group == self._group and self._whole == (len(group) == len(self._expected) + 1):
            return
        whole = len(group) == len(self._expected) + 1
        if whole:
            self._budgets.clear()
            self._whole_members = group
        elif self._whole or len(group & self._group) < len(self._group):
            self._split(group)
        self._group = group
        self._whole = whole

    def _split(self, group: frozenset[str]) -> None:
        """The group shrank (or the whole cluster split): new budgets from the money left."""
        if self._whole:
            members = len(self._whole_members | self._expected | {self.node})
            if self.money_share:
                numerator = min(1_000_000, round(self.money_share * len(group) * 1_000_000))
                parts = (numerator, 1_000_000)
            else:
                parts = (len(group), members)
            left_by_account = {a: self._normal(a) for a in self._accounts()}
        else:
            parts = (len(group), len(self._group))
            left_by_account = {a: self._left(a, self._group) for a in self._accounts()}
        budgets: dict[int, Budget] = {}
        for account, left in left_by_account.items():
            budgets[account] = Budget(
                allowance=_part(left, *parts),
                group_then=self._held(account, group),
                balance_then=self.accounting.stored.get(account, ZERO),
            )
        self._budgets = budgets

    def _accounts(self) -> set[int]:
        accounting = self.accounting
        known = set(accounting.stored) | set(accounting.credit) | set(accounting.reserved)
        for publication in self._last.values():
            known.update(publication.accounts)
        return known

    # --- money ----------------------------------------------------------------------------

    def own(self, account_id: int) -> Holding:
        accounting = self.accounting
        return Holding(
            accounting.reserved.get(account_id, ZERO),
            accounting.unconfirmed.get(account_id, ZERO),
        )

    def holding(self, name: str, account_id: int) -> Holding:
        if name == self.node:
            return self.own(account_id)
        publication = self._last.get(name)
        if publication is None:
            return _NOTHING
        return publication.accounts.get(account_id, _NOTHING)

    def _held(self, account_id: int, nodes: Iterable[str]) -> Decimal:
        return sum((self.holding(n, account_id).total for n in nodes), ZERO)

    def _normal(self, account_id: int) -> Decimal:
        accounting = self.accounting
        others = sum(
            (p.accounts.get(account_id, _NOTHING).total for p in self._last.values()), ZERO
        )
        return accounting.available(account_id) - others

    def _left(self, account_id: int, group: Iterable[str]) -> Decimal:
        normal = self._normal(account_id)
        budget = self._budgets.get(account_id)
        if budget is None:
            return normal
        balance = self.accounting.stored.get(account_id, ZERO)
        return min(normal, budget.left(self._held(account_id, group), balance))

    def available(self, account_id: int, now: float) -> Decimal:
        """What this node may still grant of the account: the cluster rule, and in a
        partition the smaller of that and the group's budget left."""
        self.settle(now)
        if self._whole:
            return self._normal(account_id)
        if account_id not in self._budgets:
            # An account first seen during the partition (created since): nothing was held of
            # it anywhere when the group formed, so the share of what it has now.
            self._budgets[account_id] = Budget(
                allowance=_part(self._normal(account_id), len(self._group), self._members()),
                group_then=self._held(account_id, self._group),
                balance_then=self.accounting.stored.get(account_id, ZERO),
            )
        return self._left(account_id, self._group)

    def _members(self) -> int:
        return len(self._whole_members | self._expected | {self.node})

    def publication(self, epoch: float, seq: int, changed_at: float | None = None) -> Reservations:
        """This node's holdings, as published."""
        accounting = self.accounting
        accounts = {
            a: self.own(a)
            for a in set(accounting.reserved) | set(accounting.unconfirmed)
            if accounting.reserved.get(a, ZERO) or accounting.unconfirmed.get(a, ZERO)
        }
        return Reservations(self.node, epoch, seq, accounts, changed_at)

    def held_accounts(self) -> set[int]:
        """The accounts some node holds something of."""
        accounting = self.accounting
        held = {
            a
            for a in set(accounting.reserved) | set(accounting.unconfirmed)
            if accounting.reserved.get(a, ZERO) or accounting.unconfirmed.get(a, ZERO)
        }
        for publication in self._last.values():
            held.update(a for a, h in publication.accounts.items() if h.reserved or h.unconfirmed)
        return held

    def by_node(self, account_id: int, now: float) -> list[NodeHolding]:
        """Every node's holding of the account (the UI's table), this node first."""
        live = self.live(now)
        rows = [NodeHolding(self.node, self.own(account_id), True, True)]
        rows += [
            NodeHolding(n, self.holding(n, account_id), n in live, False)
            for n in sorted(self._expected)
        ]
        return rows
