"""What the admin reads return: frozen values with the names of what they refer to resolved.

The pages and the API show these; they never see a database row (nor a secret: a peer says
whether it has a password, not which).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from smartswitch.model.config import Account, PeerRole, ProfitControl, RouteStrategy
from smartswitch.store.schema import (
    BalanceChangeKind,
    BalanceChangeRow,
    DidRow,
    PeerRow,
    RouteRow,
    SubscriberRow,
    TariffRow,
    UserRole,
    UserRow,
)

__all__ = [
    "Account",
    "BalanceChange",
    "DidView",
    "Names",
    "PeerView",
    "RegistrationView",
    "RouteView",
    "SubscriberView",
    "SupplierView",
    "TariffView",
    "UserView",
]


@dataclass(frozen=True, slots=True)
class Names:
    """Names by id, to show references by name."""

    accounts: dict[int, str]
    tariffs: dict[int, str]
    peers: dict[int, str]
    subscribers: dict[int, str]


@dataclass(frozen=True, slots=True)
class BalanceChange:
    id: str
    amount: Decimal
    kind: BalanceChangeKind
    reference: str | None
    created_at: datetime
    actor: str
    note: str | None

    @classmethod
    def of(cls, row: BalanceChangeRow) -> BalanceChange:
        return cls(row.id, row.amount, row.kind, row.reference, row.created_at, row.actor, row.note)


@dataclass(frozen=True, slots=True)
class TariffView:
    id: int
    name: str
    currency: str
    rates: int  # how many

    @classmethod
    def of(cls, row: TariffRow, rates: int) -> TariffView:
        return cls(row.id, row.name, row.currency, rates)


@dataclass(frozen=True, slots=True)
class RegistrationView:
    """A peer's registration with its supplier, without the password."""

    username: str | None
    registrar: str
    expires: int | None


@dataclass(frozen=True, slots=True)
class PeerView:
    name: str
    role: PeerRole
    account: str | None
    tariff: str | None
    acl: tuple[str, ...]
    username: str | None
    has_password: bool
    address: str | None
    transport: str
    max_calls: int | None
    max_cps: int | None
    caller_rewrite: tuple[dict[str, str], ...]
    callee_rewrite: tuple[dict[str, str], ...]
    profit_control: ProfitControl
    enabled: bool
    deliver_dids: bool
    register: RegistrationView | None

    @classmethod
    def of(cls, row: PeerRow, names: Names) -> PeerView:
        return cls(
            name=row.name,
            role=row.role,
            account=names.accounts.get(row.account_id),
            tariff=None if row.tariff_id is None else names.tariffs.get(row.tariff_id),
            acl=tuple(row.acl),
            username=row.username,
            has_password=row.password is not None,
            address=row.address,
            transport=row.transport,
            max_calls=row.max_calls,
            max_cps=row.max_cps,
            caller_rewrite=tuple(row.caller_rewrite),
            callee_rewrite=tuple(row.callee_rewrite),
            profit_control=row.profit_control,
            enabled=row.enabled,
            deliver_dids=row.deliver_dids,
            register=None
            if row.register_registrar is None
            else RegistrationView(
                row.register_username, row.register_registrar, row.register_expires
            ),
        )


@dataclass(frozen=True, slots=True)
class SupplierView:
    peer: str | None
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class RouteView:
    prefix: str
    strategy: RouteStrategy
    name: str | None
    suppliers: tuple[SupplierView, ...]

    @classmethod
    def of(cls, row: RouteRow, names: Names) -> RouteView:
        suppliers = tuple(
            SupplierView(names.peers.get(s.peer_id), s.priority, s.weight) for s in row.suppliers
        )
        return cls(row.prefix, row.strategy, row.name, suppliers)


@dataclass(frozen=True, slots=True)
class SubscriberView:
    """A subscriber, without its hashes."""

    username: str
    account: str | None
    tariff: str | None
    allowed_cidrs: tuple[str, ...]
    max_contacts: int
    max_calls: int | None
    caller_id: str | None
    enabled: bool

    @classmethod
    def of(cls, row: SubscriberRow, names: Names) -> SubscriberView:
        return cls(
            username=row.username,
            account=names.accounts.get(row.account_id),
            tariff=None if row.tariff_id is None else names.tariffs.get(row.tariff_id),
            allowed_cidrs=tuple(row.allowed_cidrs),
            max_contacts=row.max_contacts,
            max_calls=row.max_calls,
            caller_id=row.caller_id,
            enabled=row.enabled,
        )


@dataclass(frozen=True, slots=True)
class DidView:
    number: str
    subscriber: str | None  # the owner: a subscriber ...
    peer: str | None  # ... or a peer
    enabled: bool

    @classmethod
    def of(cls, row: DidRow, names: Names) -> DidView:
        return cls(
            row.number,
            None if row.subscriber_id is None else names.subscribers.get(row.subscriber_id),
            None if row.peer_id is None else names.peers.get(row.peer_id),
            row.enabled,
        )


@dataclass(frozen=True, slots=True)
class UserView:
    """A user of the UI and the API, without the password hash."""

    name: str
    role: UserRole
    created_at: datetime
    enabled: bool

    @classmethod
    def of(cls, row: UserRow) -> UserView:
        return cls(row.name, row.role, row.created_at, row.enabled)
