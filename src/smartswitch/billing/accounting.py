"""Live balances for authorisation, kept in memory so the call path never reads the database.

What a customer may still spend is::

    available = stored balance + credit limit - reserved - unwritten

* ``stored`` is the balance as the database last told us (refreshed from it, and updated from
  each CDR batch the writer commits);
* ``reserved`` is what the calls in progress may still cost: each call reserves what its
  maximum duration would cost when it is authorised, and releases it when it ends;
* ``unwritten`` is what finished calls cost that the database has not applied yet (queued for
  the writer; in a cluster, in the outbox waiting for the primary).

The same arithmetic serves the single node and the cluster node whose primary is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from smartswitch.routing.model import Account

ZERO = Decimal(0)


class Accounting:
    __slots__ = ("credit", "reserved", "stored", "unwritten")

    def __init__(self) -> None:
        self.stored: dict[int, Decimal] = {}
        self.credit: dict[int, Decimal] = {}
        self.reserved: dict[int, Decimal] = {}
        self.unwritten: dict[int, Decimal] = {}

    def load(self, accounts: Mapping[int, Account]) -> None:
        """Take balances and credit limits as read from the database."""
        for account in accounts.values():
            self.stored[account.id] = account.balance
            self.credit[account.id] = account.credit_limit

    def load_limits(self, accounts: Mapping[int, Account]) -> None:
        """A new configuration: credit limits change; balances of known accounts do not (they
        come from the balance refresh and the CDR writer, which are ordered with each other)."""
        for account in accounts.values():
            self.credit[account.id] = account.credit_limit
            self.stored.setdefault(account.id, account.balance)

    def set_stored(self, balances: Mapping[int, Decimal]) -> None:
        self.stored.update(balances)

    def available(self, account_id: int) -> Decimal:
        return (
            self.stored.get(account_id, ZERO)
            + self.credit.get(account_id, ZERO)
            - self.reserved.get(account_id, ZERO)
            - self.unwritten.get(account_id, ZERO)
        )

    def balance(self, account_id: int) -> Decimal:
        """The balance as it will be once every finished call is written."""
        return self.stored.get(account_id, ZERO) - self.unwritten.get(account_id, ZERO)

    def reserve(self, account_id: int, amount: Decimal) -> None:
        self.reserved[account_id] = self.reserved.get(account_id, ZERO) + amount

    def release(self, account_id: int, amount: Decimal) -> None:
        self.reserved[account_id] = self.reserved.get(account_id, ZERO) - amount

    def charge(self, account_id: int, amount: Decimal) -> None:
        """A finished call's amount, handed to the writer but not yet in the database."""
        if amount:
            self.unwritten[account_id] = self.unwritten.get(account_id, ZERO) + amount

    def written(self, charges: Mapping[int, Decimal], balances: Mapping[int, Decimal]) -> None:
        """The writer committed ``charges``; ``balances`` are the accounts' balances after it.

        Both change in one step so that no authorisation sees a charge counted twice or not at
        all.
        """
        self.stored.update(balances)
        for account_id, amount in charges.items():
            self.unwritten[account_id] = self.unwritten.get(account_id, ZERO) - amount
