"""What the web side needs of the node it runs in, stated once.

The pages, the API, ``/health``, ``/metrics`` and the node-to-node endpoints read the node
through :class:`NodePort` and nothing else: its settings, whether configuration may be changed
here, the database sessions, live balances, the calls in progress (and hanging one up), the
registrar's state, counters, the node's end of the cluster bus and a "configuration changed" hook. Live state
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

from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.vip import VipStatus
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
    @property
    def database_url(self) -> str | None: ...


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
    unconfirmed: int = 0  # delivered, not yet seen in the node's own database
    requeued: int = 0  # delivered again after the epoch moved on (a new primary)


@dataclass(frozen=True, slots=True)
class MediaRelayState:
    """One rtpengine of the node's media pool."""

    name: str
    address: str
    weight: int
    up: bool
    calls: int  # sessions the node holds on it
    requests: int
    timeouts: int  # ng requests it never answered (counted failures)
    errors: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class MediaState:
    """The node's media side: down when no relay takes new calls."""

    up: bool
    relays: tuple[MediaRelayState, ...] = ()
    restarts: int = 0  # of the node's own rtpengine
    lost_calls: int = 0  # calls ended because their relay died
    failed_calls: int = 0  # relayed calls refused: no relay, or the relay refused the SDP


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
    media: MediaState | None = None  # None: no media relay configured
    flood: Mapping[str, int] | None = None
    """The flood gate's counters (admitted, dropped, oversize, trimmed); None: no gate."""
    flood_dropped: Mapping[str, int] = field(default_factory=dict)
    """Requests from unidentified sources dropped over their rate, by method."""
    flood_sources: int = 0  # unidentified source addresses tracked now


@dataclass(frozen=True, slots=True)
class Release:
    """What the node runs: its package version, the newest schema migration its code
    carries, and the revision its database is at (None: no database, or not read yet)."""

    version: str
    schema_head: str
    db_schema: str | None


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """Where a drain stands (``smartswitch drain``; runtime/drain.py): ``draining`` (new
    calls refused, waiting for these to end), ``flushing`` (the outbox), ``drained`` (the node
    is stopping)."""

    phase: str
    calls: int
    outbox_depth: int | None
    retry_after: int
    seconds_left: float
    elapsed: float
    calls_ended_at_deadline: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


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


@dataclass(frozen=True, slots=True)
class CaptureState:
    """Call capture on this node, for the dashboard and /metrics."""

    mode: str  # off, all, selected
    error: str | None  # why files are not being written (a full or unwritable directory)
    calls_active: int
    calls_captured: int
    calls_skipped: int
    files_written: int
    write_errors: int
    messages_dropped: int
    files_deleted: int  # by retention
    hep_sent: int
    hep_errors: int


@dataclass(frozen=True, slots=True)
class SyncPeer:
    """File sync towards one other node."""

    name: str
    queued: int  # files waiting for it (its backlog)
    oldest_queued: float | None  # wall time the oldest of them was queued
    pushed: int
    failures: int
    failing: bool
    last_error: str | None


@dataclass(frozen=True, slots=True)
class FileSyncState:
    daemon_running: bool
    daemon_error: str | None
    peers: tuple[SyncPeer, ...]


class NodePort(Protocol):
    """The running node as the web side sees it."""

    @property
    def config(self) -> NodeSettings: ...

    @property
    def read_only(self) -> bool:
        """Configuration may not be changed here (a replica, or the config says so)."""
        ...

    async def write_refusal(self) -> str | None:
        """Asked at the moment of each configuration change, once :attr:`read_only` let it
        through: None when it may be made now, otherwise why not (with automatic failover:
        this node could not confirm, with etcd now, that it holds the primary lease). Never
        answered from a cached state."""
        ...

    @property
    def primary_name(self) -> str:
        """Where configuration is changed, for the read-only banner ("" if unknown)."""
        ...

    @property
    def db_role(self) -> DatabaseRole: ...

    @property
    def release(self) -> Release:
        """The version and schema revisions, for the cluster page (version skew)."""
        ...

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
    def bus(self) -> NodeBus | None:
        """This node's end of the cluster bus (its routes, membership, client); None unless
        it is a node of a cluster."""
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

    def capture_state(self) -> CaptureState | None:
        """None when this node does not capture (lab mode)."""
        ...

    def capture_file(self, node: str, cdr_id: str) -> Path | None:
        """The capture of the call with CDR id ``cdr_id`` handled by ``node``, when this node
        holds it (its own, or copied here by the file sync); None otherwise or for names that
        are not a node's and a CDR id."""
        ...

    async def file_sync_state(self) -> FileSyncState | None:
        """None when this node syncs no files (not in a cluster)."""

    def vip_status(self) -> VipStatus | None:
        """This node's view of the shared IP (its keepalived's state and since when); None
        when the node does not take part in it."""
        ...

    def config_changed(self) -> None:
        """Configuration was just changed through this node: reload now, not at the next
        poll."""
        ...

    def drain(self, deadline: float, retry_after: int, flush_timeout: float) -> DrainStatus:
        """Start draining this node (or return the drain under way): refuse new calls with
        503 and ``retry_after``, wait ``deadline`` s for the calls to end, flush the outbox
        (at most ``flush_timeout`` s), stop."""
        ...

    def drain_status(self) -> DrainStatus | None:
        """The drain under way, or None."""
        ...

    async def drain_finished(self, timeout: float) -> DrainStatus | None:
        """Wait up to ``timeout`` s for the drain under way to finish; its status then."""
        ...
