"""What the web side needs of the node it runs in, stated once.

The pages, the API, ``/health``, ``/metrics`` and the node-to-node endpoints read the node
through :class:`NodePort` and nothing else: its settings, whether configuration may be changed
here, the database sessions, live balances, the calls in progress (and hanging one up), the
registrar's state, counters, the cluster status and a "configuration changed" hook. Live state
crosses as plain values (:class:`LiveCall`, :class:`Counters`, ...), never as the B2BUA's or
the registrar's own objects.

The node implements it (:class:`smartswitch.runtime.webport.WebPort`); the web tests use a
small fake of it (``tests/web/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.cluster.replication import DatabaseRole
from smartswitch.registrar.guard import SourceGuard

Sessions = async_sessionmaker[AsyncSession]


class NodeSettings(Protocol):
    """The node's configuration, as far as the web side reads it."""

    @property
    def node_id(self) -> str: ...
    @property
    def node_name(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def db_scheme(self) -> str: ...
    @property
    def cluster_secret(self) -> str: ...
    @property
    def sip_realm(self) -> str: ...
    @property
    def cookie_secure(self) -> bool: ...
    @property
    def dedicated_ip(self) -> str: ...
    @property
    def shared_ip(self) -> str: ...
    @property
    def sip_listen(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in progress, for the calls page and ``GET /api/v1/calls``."""

    key: str  # what hang_up() takes
    call_id: str
    state: str
    caller: str
    callee: str
    supplier: str | None
    age_seconds: float
    talk_seconds: float | None


@dataclass(frozen=True, slots=True)
class NodeMoney:
    """What one node of the cluster holds of an account, as this node last heard (amounts
    to the 4 places of every amount)."""

    node: str
    reserved: Decimal  # the time granted to its calls in progress
    unconfirmed: Decimal  # its finished calls' charges not yet in the replicated balance
    live: bool  # heard within the staleness limit (else its last figures)
    own: bool  # this node


@dataclass(frozen=True, slots=True)
class EngineState:
    """The SIP engine's sizes, for ``/health``."""

    calls: int = 0
    call_states: Mapping[str, int] = field(default_factory=dict)
    client_transactions: int = 0
    server_transactions: int = 0
    timers: int = 0
    dialogs: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outbox and its forwarder (billing mode): CDRs on their way to the database."""

    outbox_depth: int
    delivered: int
    last_delivery: float | None  # wall clock
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Counters:
    """Everything ``/metrics`` counts, read at once."""

    calls: int = 0  # INVITEs that started a call
    answered: int = 0
    rejected: int = 0
    in_progress: int = 0
    supplier_attempts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """By supplier label: (attempts sent, answered)."""
    messages_in: Mapping[str, int] = field(default_factory=dict)
    """SIP messages received by method (requests) or code (responses)."""
    messages_out: Mapping[str, int] = field(default_factory=dict)
    delivery: Delivery | None = None  # None: no outbox (lab mode)
    bindings: int | None = None  # registered contacts; None: no registrar


class RegistrarPort(Protocol):
    """The node's registrar: its location service, bans and outbound registrations."""

    def bindings(self) -> list[dict[str, Any]]:
        """The live bindings (expired ones left out), by AoR and contact."""
        ...

    def bans(self) -> dict[str, int]:
        """The source addresses banned now, with the seconds left."""
        ...

    def outbound(self) -> list[dict[str, Any]]:
        """The switch's registrations with its suppliers."""
        ...

    @property
    def guard(self) -> SourceGuard:
        """The defence against guessing and floods (read on the event loop, where it lives)."""
        ...


class SharedRegistrations(Protocol):
    """This node's part in sharing registrations across the cluster."""

    @property
    def node_name(self) -> str: ...

    def own_bindings(self) -> list[dict[str, Any]]:
        """The bindings this node took, as sent to a node that (re)joins."""
        ...

    def apply(self, sender: str, changes: list[dict[str, Any]]) -> int:
        """Take another node's binding changes; how many applied (raises KeyError,
        TypeError or ValueError for a malformed change)."""
        ...


class NodePort(Protocol):
    """The running node as the web side sees it."""

    @property
    def config(self) -> NodeSettings: ...

    @property
    def read_only(self) -> bool:
        """Configuration may not be changed here (a replica, or the config says so)."""
        ...

    @property
    def primary_name(self) -> str:
        """Where configuration is changed, for the read-only banner ("" if unknown)."""
        ...

    @property
    def db_role(self) -> DatabaseRole: ...

    @property
    def sessions(self) -> Sessions | None:
        """The node's database; None in lab mode (no database)."""
        ...

    @property
    def config_version(self) -> int | None:
        """The configuration version the call path runs on; None in lab mode."""
        ...

    @property
    def registrar(self) -> RegistrarPort | None: ...

    @property
    def shared_registrations(self) -> SharedRegistrations | None:
        """None unless this node shares its registrations with a cluster."""
        ...

    def balance(self, account_id: int) -> tuple[Decimal, Decimal] | None:
        """The node's own view of an account: (balance less the charges not yet delivered,
        what is available for new calls); None when the node does not track it."""
        ...

    def balances(self) -> dict[str, Decimal]:
        """Every account's live balance by name (empty in lab mode)."""
        ...

    def holdings(self, account_id: int) -> list[NodeMoney]:
        """What each node of the cluster holds of the account (this node first); empty when
        the node is not in a cluster or in lab mode."""
        ...

    def calls(self) -> list[LiveCall]: ...

    def hang_up(self, key: str) -> bool:
        """End a call in progress (both legs get a BYE or CANCEL); False if it is gone."""
        ...

    def counters(self) -> Counters: ...

    def engine_state(self) -> EngineState: ...

    def config_changed(self) -> None:
        """Configuration was just changed through this node: reload now, not at the next
        poll."""
        ...
