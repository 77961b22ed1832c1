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
    NodeRow,
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
    "NodeAccountView",
    "NodeAddress",
    "NodeView",
    "PeerView",
    "RegistrationView",
    "RouteView",
    "SubscriberView",
    "SupplierView",
    "TariffView",
    "UserView",
    "peer_addresses",
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
class NodeAccountView:
    """One node's own account at a supplier, without its password."""

    node: str
    username: str


@dataclass(frozen=True, slots=True)
class RegistrationView:
    """A peer's registration with its supplier, without the passwords."""

    username: str | None  # the default account (None: only the nodes of ``nodes`` register)
    registrar: str
    expires: int | None
    nodes: tuple[NodeAccountView, ...] = ()

    def account(self, node: str) -> str | None:
        """The username ``node`` registers as (None: that node does not register)."""
        for entry in self.nodes:
            if entry.node == node:
                return entry.username
        return self.username


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
    nodes: tuple[str, ...] = ()  # the nodes it is attached to (empty: every node)
    tls_fingerprint: str | None = None  # mutual TLS: the client certificate identifying it
    media: str = "direct"  # or "relay"
    codecs: tuple[str, ...] = ()  # allowed (empty: any)
    record: bool = False
    direct_fallback: bool = False

    def attached(self, node: str) -> bool:
        return not self.nodes or node in self.nodes

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
                row.register_username,
                row.register_registrar,
                row.register_expires,
                tuple(NodeAccountView(a["node"], a["username"]) for a in row.register_nodes),
            ),
            nodes=tuple(row.nodes),
            tls_fingerprint=row.tls_fingerprint,
            media=row.media_mode,
            codecs=tuple(row.media_codecs),
            record=row.media_record,
            direct_fallback=row.media_fallback,
        )


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node of the cluster as it registered itself (the ``nodes`` table)."""

    name: str
    dedicated_ip: str
    sip_address: str  # what it listens on, "host:port" (the host may be a wildcard)
    shared_ip: str

    @classmethod
    def of(cls, row: NodeRow) -> NodeView:
        return cls(row.name, row.dedicated_ip, row.sip_address, row.shared_ip)

    @property
    def signalling(self) -> str:
        """Where a peer sends this node its SIP: the dedicated IP on the node's SIP port (the
        listening address itself when the node has no dedicated IP)."""
        host, port = _split_hostport(self.sip_address)
        ip = self.dedicated_ip or ("" if host in ("", "0.0.0.0", "::") else host)
        if not ip:
            return ""
        text = f"[{ip}]" if ":" in ip else ip
        return f"{text}:{port}" if port else text


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A node a peer is attached to, and where that node sends and receives its SIP: what
    the operator gives the peer for its interconnection form. ``known``: the node is in the
    ``nodes`` table (a node not started yet, or a name mistyped, is not)."""

    node: str
    dedicated_ip: str
    signalling: str
    known: bool


def peer_addresses(peer: PeerView, nodes: list[NodeView]) -> list[NodeAddress]:
    """The nodes ``peer`` is attached to, with their addresses (every known node when it is
    attached to all)."""
    by_name = {node.name: node for node in nodes}
    names = sorted(peer.nodes) if peer.nodes else sorted(by_name)
    found: list[NodeAddress] = []
    for name in names:
        node = by_name.get(name)
        if node is None:
            found.append(NodeAddress(name, "", "", known=False))
        else:
            found.append(NodeAddress(name, node.dedicated_ip, node.signalling, known=True))
    return found


def _split_hostport(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":")
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, "")


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
