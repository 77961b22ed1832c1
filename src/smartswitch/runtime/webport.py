"""The node as its web side sees it: :class:`smartswitch.web.ports.NodePort`, implemented.

Made by :class:`~smartswitch.runtime.node.Node` once its B2BUA and endpoint exist, and given to
:func:`smartswitch.web.app.create_app`. Everything here runs on the node's event loop (the
web handlers that call it are ``async`` or quick reads) and only reads, except
:meth:`WebPort.hang_up` and :meth:`WebPort.config_changed`.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartswitch import __version__
from smartswitch.b2bua.call import Call
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.vip import VipStatus
from smartswitch.model.money import AMOUNT_SCALE
from smartswitch.registrar.guard import SourceGuard
from smartswitch.runtime.capture import capture_path
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.registrar import RegistrarService
from smartswitch.store.migrate import head_revision
from smartswitch.web.ports import (
    CaptureState,
    Counters,
    Delivery,
    DrainStatus,
    EngineState,
    FileSyncState,
    LiveCall,
    MediaRelayState,
    MediaState,
    NodeMoney,
    RegistrarPort,
    Release,
    Sessions,
    SyncPeer,
)

_AMOUNT = Decimal(1).scaleb(-AMOUNT_SCALE)

if TYPE_CHECKING:
    from smartswitch.runtime.node import Node


class WebPort:
    """What the web side reads and drives of a running :class:`Node`."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._loop = asyncio.get_running_loop()
        services = node.services
        registrar = services.registrar if services is not None else None
        self._registrar = None if registrar is None else _Registrar(registrar, self._loop)

    # -- what the node is

    @property
    def config(self) -> NodeConfig:
        return self._node.config

    @property
    def read_only(self) -> bool:
        return self._node.read_only

    async def write_refusal(self) -> str | None:
        failover = self._node.failover
        return None if failover is None else await failover.write_refusal()

    @property
    def primary_name(self) -> str:
        return self._node.primary_name

    @property
    def db_role(self) -> DatabaseRole:
        return self._node.db_role

    @property
    def release(self) -> Release:
        services = self._node.services
        return Release(
            __version__,
            head_revision(),
            services.db_revision if services is not None else None,
        )

    @property
    def sessions(self) -> Sessions | None:
        services = self._node.services
        return services.sessions if services is not None else None

    @property
    def config_version(self) -> int | None:
        services = self._node.services
        return services.config_version if services is not None else None

    def config_changed(self) -> None:
        if self._node.services is not None:
            self._node.services.reload_soon()

    # -- draining

    def drain(self, deadline: float, retry_after: int, flush_timeout: float) -> DrainStatus:
        return self._node.drain(deadline, retry_after, flush_timeout).status()

    def drain_status(self) -> DrainStatus | None:
        drainer = self._node.drainer
        return drainer.status() if drainer is not None else None

    async def drain_finished(self, timeout: float) -> DrainStatus | None:
        drainer = self._node.drainer
        return await drainer.wait(timeout) if drainer is not None else None

    # -- money

    def balance(self, account_id: int) -> tuple[Decimal, Decimal] | None:
        services = self._node.services
        if services is None:
            return None
        accounting = services.accounting
        if services.ledger is not None:  # a cluster node: less what the others hold
            now = asyncio.get_running_loop().time()
            return accounting.balance(account_id), services.ledger.available(account_id, now)
        return accounting.balance(account_id), accounting.available(account_id)

    def holdings(self, account_id: int) -> list[NodeMoney]:
        services = self._node.services
        if services is None or services.ledger is None:
            return []
        now = asyncio.get_running_loop().time()
        return [
            NodeMoney(
                h.node,
                h.holding.reserved.quantize(_AMOUNT),
                h.holding.unconfirmed.quantize(_AMOUNT),
                h.live,
                h.own,
            )
            for h in services.ledger.by_node(account_id, now)
        ]

    def balances(self) -> dict[str, Decimal]:
        services = self._node.services
        if services is None or services.policy is None:
            return {}
        accounting = services.accounting
        accounts = services.policy.views.snapshot.accounts.values()
        return {a.name: accounting.balance(a.id) for a in accounts}

    # -- calls

    def calls(self) -> list[LiveCall]:
        b2bua = self._node.b2bua
        now = self._loop.time()
        seen: set[int] = set()
        out = []
        for key, call in list(b2bua.calls.items()):
            if id(call) not in seen:  # a call is filed under more than one key
                seen.add(id(call))
                out.append(_live_call(key, call, now))
        return out

    def hang_up(self, key: str) -> bool:
        ended = bool(self._node.b2bua.hangup(key, self._loop.time()))
        endpoint = self._node.endpoint
        if ended and endpoint is not None:
            endpoint.flush()  # the BYEs and CANCELs leave now, not at the next timer
        return ended

    def counters(self) -> Counters:
        b2bua = self._node.b2bua
        endpoint = self._node.endpoint
        services = self._node.services
        registrar = services.registrar if services is not None else None
        gate = self._node.sip.layer.gate
        return Counters(
            calls=b2bua.stats["calls"],
            answered=b2bua.stats["answered"],
            rejected=b2bua.stats["rejected"],
            in_progress=len({id(call) for call in b2bua.calls.values()}),
            supplier_attempts={label: (c[0], c[1]) for label, c in b2bua.label_stats.items()},
            messages_in=_kinds(endpoint.rx_by_kind) if endpoint is not None else {},
            messages_out=_kinds(endpoint.tx_by_kind) if endpoint is not None else {},
            delivery=self._delivery(),
            bindings=len(registrar.location) if registrar is not None else None,
            flood=dict(gate.stats) if gate is not None else None,
            flood_dropped=dict(gate.dropped_by_method) if gate is not None else {},
            flood_sources=gate.sources if gate is not None else 0,
            media=self._media(),
        )

    def _media(self) -> MediaState | None:
        media = self._node.media
        if media is None:
            return None
        status = media.status()
        return MediaState(
            up=status.up,
            relays=tuple(
                MediaRelayState(
                    r.name,
                    r.address,
                    r.weight,
                    r.up,
                    r.calls,
                    r.requests,
                    r.timeouts,
                    r.errors,
                    r.last_error,
                )
                for r in status.relays
            ),
            restarts=status.restarts,
            lost_calls=status.lost_calls,
            failed_calls=status.failed_calls,
        )

    def _delivery(self) -> Delivery | None:
        services = self._node.services
        if services is None:
            return None
        forwarder = services.forwarder
        return Delivery(
            outbox_depth=services.outbox.depth,
            delivered=forwarder.delivered,
            last_delivery=forwarder.last_delivery,
            last_error=forwarder.last_error,
            unconfirmed=services.outbox.unconfirmed,
            requeued=forwarder.requeued,
        )

    def engine_state(self) -> EngineState:
        b2bua = self._node.b2bua
        states: dict[str, int] = {}
        for call in b2bua.calls.values():
            states[call.state.value] = states.get(call.state.value, 0) + 1
        return EngineState(
            calls=len(b2bua.calls),
            call_states=states,
            client_transactions=len(b2bua.layer.client) + len(b2bua.layer.client_ghosts),
            server_transactions=len(b2bua.layer.server) + len(b2bua.layer.server_ghosts),
            timers=len(b2bua.timers),
            dialogs=len(b2bua.dialogs),
        )

    # -- capture and file sync

    def capture_state(self) -> CaptureState | None:
        capture = self._node.capture
        if capture is None:
            return None
        stats = capture.stats()
        return CaptureState(
            mode=capture.settings.mode,
            error=stats.error,
            calls_active=stats.calls_active,
            calls_captured=stats.calls_captured,
            calls_skipped=stats.calls_skipped,
            files_written=stats.files_written,
            write_errors=stats.write_errors,
            messages_dropped=stats.messages_dropped,
            files_deleted=capture.files_deleted,
            hep_sent=stats.hep_sent,
            hep_errors=stats.hep_errors,
        )

    def capture_file(self, node: str, cdr_id: str) -> Path | None:
        try:
            path = capture_path(self._node.config.data_dir, node, cdr_id)
        except ValueError:
            return None
        return path if path.is_file() else None

    async def file_sync_state(self) -> FileSyncState | None:
        sync = self._node.filesync
        if sync is None:
            return None
        status = await sync.status()
        return FileSyncState(
            daemon_running=status.daemon_running,
            daemon_error=status.daemon_error,
            peers=tuple(
                SyncPeer(
                    name=p.name,
                    queued=p.queued,
                    oldest_queued=p.oldest_queued,
                    pushed=p.pushed,
                    failures=p.failures,
                    failing=p.failing,
                    last_error=p.last_error,
                )
                for p in status.peers
            ),
        )

    def vip_status(self) -> VipStatus | None:
        vip = self._node.vip
        return None if vip is None else vip.status()

    # -- registrations

    @property
    def registrar(self) -> RegistrarPort | None:
        return self._registrar

    # -- the cluster

    @property
    def bus(self) -> NodeBus | None:
        return self._node.bus


class _Registrar:
    def __init__(self, service: RegistrarService, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._loop = loop

    def bindings(self) -> list[dict[str, Any]]:
        return self._service.bindings_state(self._loop.time())

    def bans(self) -> dict[str, int]:
        wall = self._service.wall(self._loop.time())
        return {ip: round(until - wall) for ip, until in self._service.guard.bans(wall).items()}

    def outbound(self) -> list[dict[str, Any]]:
        return self._service.outbound_state(self._loop.time())

    @property
    def guard(self) -> SourceGuard:
        return self._service.guard


def _kinds(counts: dict[bytes, int]) -> dict[str, int]:
    return {kind.decode("ascii", "replace"): n for kind, n in counts.items()}


def _user(name_addr: Any) -> str:
    try:
        return str(name_addr.sip_uri().user or "")
    except Exception:  # an odd URI in a live call must not break the page
        return ""


def _live_call(key: str, call: Call, now: float) -> LiveCall:
    attempt = call.attempt
    return LiveCall(
        key=key,
        call_id=call.id,
        state=call.state.value,
        caller=_user(call.a_request.from_),
        callee=_user(call.a_request.to),
        supplier=attempt.destination.label if attempt is not None else None,
        age_seconds=round(max(0.0, now - call.setup_time), 1),
        talk_seconds=None
        if call.answer_time is None
        else round(max(0.0, now - call.answer_time), 1),
    )
