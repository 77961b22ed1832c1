"""The configuration the call path reads, as plain frozen values.

The store loads these from the database into a :class:`ConfigSnapshot`; the call path reads the
snapshot only (never the database).  A new snapshot replaces the old one whole when the
configuration version changes, so a call sees one consistent configuration.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from smartswitch.model.increment import Increment
from smartswitch.model.media import DIRECT, MediaSettings


class PeerRole(enum.StrEnum):
    CUSTOMER = "customer"
    SUPPLIER = "supplier"
    BOTH = "both"


class RouteStrategy(enum.StrEnum):
    PRIORITY = "priority"
    LEAST_COST = "least_cost"
    WEIGHTED = "weighted"


class ProfitControl(enum.StrEnum):
    ALLOW_LOSS = "allow_loss"
    NO_LOSS = "no_loss"
    PROFIT_ONLY = "profit_only"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    currency: str
    balance: Decimal
    credit_limit: Decimal
    prepaid: bool = True
    reserve_seconds: int | None = None
    """The prepaid time a call is granted at a time (its slice); None: the node's setting.
    Small slices let more calls share a small balance; large ones mean fewer extensions."""
    record: bool = False
    """Its relayed calls are recorded whatever their peers say (recording needs the relay:
    a call in direct media is not)."""


@dataclass(frozen=True, slots=True)
class Rate:
    prefix: str
    price_per_minute: Decimal
    connect_fee: Decimal = Decimal(0)
    increment: Increment = Increment(1, 1)  # noqa: RUF009 - frozen, safe to share
    free_seconds: int = 0
    effective_from: datetime | None = None
    effective_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tariff:
    id: int
    name: str
    currency: str
    rates: tuple[Rate, ...]


@dataclass(frozen=True, slots=True)
class AclEntry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """A regular-expression rewrite of a number: ``re.sub(match, replace, number, count=1)``."""

    match: str
    replace: str


@dataclass(frozen=True, slots=True)
class NodeAccount:
    """One node's own account at a supplier that registers each node separately."""

    node: str
    username: str
    password: str = field(repr=False)  # never in a log line or a traceback


@dataclass(frozen=True, slots=True)
class SupplierRegistration:
    """A supplier that wants the switch to register with it (RFC 3261 10.2).

    Each node registers once, with its own account: its entry in ``nodes`` if it has one,
    else the default ``username`` / ``password`` (empty when every node has its own).

    The passwords are kept as given: answering the supplier's challenge needs them (its realm
    is the supplier's, unknown until it challenges)."""

    username: str
    password: str = field(repr=False)  # never in a log line or a traceback
    registrar: str  # "host", "host:port" or "[v6]:port"
    expires: int = 3600
    nodes: tuple[NodeAccount, ...] = ()  # per-node accounts, overriding the default

    def account(self, node: str) -> tuple[str, str] | None:
        """The (username, password) ``node`` registers with; None if it has none."""
        for entry in self.nodes:
            if entry.node == node:
                return entry.username, entry.password
        if self.username and self.password:
            return self.username, self.password
        return None


@dataclass(frozen=True, slots=True)
class Peer:
    id: int
    name: str
    role: PeerRole
    account_id: int
    tariff_id: int | None
    acl: tuple[AclEntry, ...] = ()
    username: str | None = None
    password: str | None = None
    address: str | None = None  # "host:port" of a supplier
    transport: str = "udp"
    max_calls: int | None = None
    max_cps: int | None = None
    caller_rewrite: tuple[RewriteRule, ...] = ()
    callee_rewrite: tuple[RewriteRule, ...] = ()
    profit_control: ProfitControl = ProfitControl.ALLOW_LOSS
    enabled: bool = True
    deliver_dids: bool = False  # its INVITEs to our DIDs go to the DIDs' owners (registrar)
    register: SupplierRegistration | None = None  # the switch registers with this supplier
    # The nodes it is attached to (empty: every node). A customer is served only by these
    # nodes; a supplier is sent calls only from these nodes.
    nodes: frozenset[str] = frozenset()
    # Mutual TLS: the SHA-256 fingerprint ("AB:CD:...") of the client certificate that
    # identifies it on the TLS port. Set, its ACL alone no longer admits a call: the call
    # must come over TLS with this certificate.
    tls_fingerprint: str | None = None
    media: MediaSettings = DIRECT  # direct (SDP untouched) or relayed, codecs, recording

    def attached(self, node: str) -> bool:
        """Whether the peer is attached to ``node`` (every node when its set is empty)."""
        return not self.nodes or node in self.nodes

    @property
    def is_customer(self) -> bool:
        return self.role in (PeerRole.CUSTOMER, PeerRole.BOTH)

    @property
    def is_supplier(self) -> bool:
        return self.role in (PeerRole.SUPPLIER, PeerRole.BOTH)


@dataclass(frozen=True, slots=True)
class RouteSupplier:
    peer_id: int
    priority: int = 0
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Route:
    id: int
    prefix: str
    strategy: RouteStrategy
    suppliers: tuple[RouteSupplier, ...]


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    version: int
    accounts: dict[int, Account] = field(default_factory=dict)
    peers: dict[int, Peer] = field(default_factory=dict)
    tariffs: dict[int, Tariff] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    subscribers: dict[int, Subscriber] = field(default_factory=dict)
    dids: dict[str, Did] = field(default_factory=dict)  # by number
    # The global signalling setting "bind address": empty, each node originates from its own
    # dedicated IP; else the shared IP, from which only the node holding it originates.
    bind_address: str = ""
    # Every global setting as stored (name -> text), already validated by the writer: the
    # capture settings among them (read by the runtime, not the call path).
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A user whose phones register with the switch (the registrar) and who may call out.

    The password is never kept: only HA1 = H(username:realm:password) for MD5 and SHA-256
    (RFC 7616 3.4.2), computed for ``realm`` when provisioned. A subscriber calls out like a
    customer: billed to ``account_id`` at ``tariff_id`` (no tariff: it may only receive)."""

    id: int
    username: str
    account_id: int
    tariff_id: int | None
    realm: str
    ha1_md5: str = field(repr=False)  # secrets: never in a log line or a traceback
    ha1_sha256: str = field(repr=False)
    allowed_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # () = any
    max_contacts: int = 5
    max_calls: int | None = None
    caller_id: str | None = None  # the number presented on its calls out (else its From user)
    enabled: bool = True

    def allows_source(self, ip: str) -> bool:
        """Whether ``ip`` is in the subscriber's ``allowed_cidrs`` (no list: every address is)."""
        networks = self.allowed_cidrs
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # what a dual-stack socket reports for an IPv4 sender
        return any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class Did:
    """A number we host: calls to it from a peer that delivers DIDs go to its owner, a
    subscriber (all its registered contacts at once) or a peer (a trunk)."""

    id: int
    number: str
    subscriber_id: int | None = None
    peer_id: int | None = None
    enabled: bool = True
