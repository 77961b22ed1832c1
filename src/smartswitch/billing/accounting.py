"""Live balances for authorisation, kept in memory so the call path never reads a database.

What an account may still spend is::

    available = stored balance + credit limit - reserved - unconfirmed

* ``stored`` is the balance as the node's own database last showed it (on a cluster node, the
  replica of the primary);
* ``reserved`` is what the calls in progress may still cost: a call reserves what its maximum
  duration would cost when it is authorised and releases it when it ends;
* ``unconfirmed`` is what this node's finished calls cost that the stored balance does not
  include yet: in the outbox, on the way to the primary, or delivered but not yet replicated
  back. A record stops being unconfirmed when its CDR id is seen in the same database snapshot
  the balances were read from, so no charge is ever counted twice or not at all.

The same arithmetic serves the single node and the cluster node whose primary is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from smartswitch.model.config import Account

ZERO = Decimal(0)


class Accounting:
    __slots__ = ("credit", "on_change", "pending", "reserved", "stored", "unconfirmed")

    def __init__(self) -> None:
        # Told of each change to what this node holds (reserved or unconfirmed), so that the
        # other nodes of a cluster hear of it at once (smartswitch.runtime.money).
        self.on_change: Callable[[], None] | None = None
        self.stored: dict[int, Decimal] = {}
        self.credit: dict[int, Decimal] = {}
        self.reserved: dict[int, Decimal] = {}
        self.unconfirmed: dict[int, Decimal] = {}
        self.pending: dict[str, tuple[tuple[int, Decimal], ...]] = {}  # record id -> charges

    def load(self, accounts: Mapping[int, Account]) -> None:
        """Take balances and credit limits as read from the database at start."""
        for account in accounts.values():
            self.stored[account.id] = account.balance
            self.credit[account.id] = account.credit_limit

    def load_limits(self, accounts: Mapping[int, Account]) -> None:
        """A new configuration: credit limits change; balances of known accounts do not (they
        come from :meth:`confirm`, read together with the CDRs they include)."""
        for account in accounts.values():
            self.credit[account.id] = account.credit_limit
            self.stored.setdefault(account.id, account.balance)

    def available(self, account_id: int) -> Decimal:
        return (
            self.stored.get(account_id, ZERO)
            + self.credit.get(account_id, ZERO)
            - self.reserved.get(account_id, ZERO)
            - self.unconfirmed.get(account_id, ZERO)
        )

    def balance(self, account_id: int) -> Decimal:
        """The balance once every finished call of this node is counted."""
        return self.stored.get(account_id, ZERO) - self.unconfirmed.get(account_id, ZERO)

    def reserve(self, account_id: int, amount: Decimal) -> None:
        self.reserved[account_id] = self.reserved.get(account_id, ZERO) + amount
        if self.on_change is not None:
            self.on_change()

    def release(self, account_id: int, amount: Decimal) -> None:
        self.reserved[account_id] = self.reserved.get(account_id, ZERO) - amount
        if self.on_change is not None:
            self.on_change()

    def charge(self, record_id: str, charges: Iterable[tuple[int, Decimal]]) -> None:
        """A finished call's amounts, not yet in the stored balances. Once per record: a
        record id charged again (the same outbox record seen twice) changes nothing."""
        kept = tuple((account_id, amount) for account_id, amount in charges if amount)
        if not kept or record_id in self.pending:
            return
        self.pending[record_id] = kept
        for account_id, amount in kept:
            self.unconfirmed[account_id] = self.unconfirmed.get(account_id, ZERO) + amount
        if self.on_change is not None:
            self.on_change()

    def confirm(self, balances: Mapping[int, Decimal], present: Iterable[str]) -> None:
        """``balances`` were read in one database snapshot with ``present``, the pending
        record ids that snapshot already contains: take both in one step."""
        self.stored.update(balances)
        changed = False
        for record_id in present:
            charges = self.pending.pop(record_id, ())
            for account_id, amount in charges:
                changed = True
                self.unconfirmed[account_id] = self.unconfirmed.get(account_id, ZERO) - amount
        if changed and self.on_change is not None:
            self.on_change()
