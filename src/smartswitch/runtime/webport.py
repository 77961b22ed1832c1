"""The node as its web side sees it: :class:`smartswitch.web.ports.NodePort`, implemented.

Made by :class:`~smartswitch.runtime.node.Node` once its B2BUA and endpoint exist, and given to
:func:`smartswitch.web.app.create_app`. Everything here runs on the node's event loop (the
web handlers that call it are ``async`` or quick reads) and only reads, except
:meth:`WebPort.hang_up` and :meth:`WebPort.config_changed`.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from smartswitch.b2bua.call import Call
from smartswitch.cluster.registrations import RegistrationSync, apply_changes, binding_to_dict
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.model.money import AMOUNT_SCALE
from smartswitch.registrar.guard import SourceGuard
from smartswitch.runtime.config import NodeConfig
from smartswitch.runtime.registrar import RegistrarService
from smartswitch.web.ports import (
    Counters,
    Delivery,
    EngineState,
    LiveCall,
    NodeMoney,
    RegistrarPort,
    Sessions,
    SharedRegistrations,
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

    @property
    def primary_name(self) -> str:
        return self._node.primary_name

    @property
    def db_role(self) -> DatabaseRole:
        return self._node.db_role

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
        )

    def engine_state(self) -> EngineState:
        b2bua = self._node.b2bua
        states: dict[str, int] = {}
        for call in b2bua.calls.values():
            states[call.state.value] = states.get(call.state.value, 0) + 1
        return EngineState(
            calls=len(b2bua.calls),
            call_states=states,
            client_transactions=len(b2bua.layer.client),
            server_transactions=len(b2bua.layer.server),
            timers=len(b2bua.timers),
            dialogs=len(b2bua.dialogs),
        )

    # -- registrations

    @property
    def registrar(self) -> RegistrarPort | None:
        return self._registrar

    @property
    def shared_registrations(self) -> SharedRegistrations | None:
        sync = self._node.registration_sync
        services = self._node.services
        if sync is None or services is None or services.registrar is None:
            return None
        return _Shared(sync, services.registrar)


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


class _Shared:
    def __init__(self, sync: RegistrationSync, service: RegistrarService) -> None:
        self._sync = sync
        self._service = service

    @property
    def node_name(self) -> str:
        return self._sync.node_name

    def own_bindings(self) -> list[dict[str, Any]]:
        return [binding_to_dict(b) for b in self._sync.own_bindings()]

    def apply(self, sender: str, changes: list[dict[str, Any]]) -> int:
        return apply_changes(self._service.location, sender, changes)


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
