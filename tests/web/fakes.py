"""A stand-in for the node behind the web side: :class:`smartswitch.web.ports.NodePort`, with
every live value a plain field a test sets (calls in progress, counters, the database role)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.vip import VipStatus
from smartswitch.registrar.guard import SourceGuard
from smartswitch.runtime.config import NodeConfig
from smartswitch.web.ports import (
    CaptureState,
    Counters,
    DrainStatus,
    EngineState,
    FileSyncState,
    LiveCall,
    NodeMoney,
    NodePort,
    RegistrarPort,
    Release,
    Sessions,
)


def live_call(key: str = "abc@caller;tag=1", **changes: Any) -> LiveCall:
    """A connected call of 60 s, answered 58 s ago, from 15550000000 to 15551234567 via s1."""
    values: dict[str, Any] = {
        "key": key,
        "call_id": key.split(";", 1)[0],
        "state": "connected",
        "caller": "15550000000",
        "callee": "15551234567",
        "supplier": "s1",
        "age_seconds": 60.0,
        "talk_seconds": 58.0,
    }
    values.update(changes)
    return LiveCall(**values)


@dataclass
class FakeRegistrar:
    """A registrar as the web sees it: its guard, live bindings, bans, outbound states."""

    guard: SourceGuard
    live_bindings: list[dict[str, Any]] = field(default_factory=list)
    outbound_states: list[dict[str, Any]] = field(default_factory=list)

    def bindings(self) -> list[dict[str, Any]]:
        return list(self.live_bindings)

    def bans(self) -> dict[str, int]:
        now = time.time()
        return {ip: round(until - now) for ip, until in self.guard.bans(now).items()}

    def outbound(self) -> list[dict[str, Any]]:
        return list(self.outbound_states)


def _registrar_conforms(registrar: FakeRegistrar) -> RegistrarPort:
    return registrar  # mypy checks that the fake is a RegistrarPort


@dataclass
class FakeNode:
    config: NodeConfig
    sessions: Sessions | None
    read_only: bool = False
    primary_name: str = "db1.example.net"
    db_role: DatabaseRole = field(default_factory=lambda: DatabaseRole("single", True, "single"))
    config_version: int | None = 1
    registrar: RegistrarPort | None = None
    bus: NodeBus | None = None
    live_balances: dict[int, tuple[Decimal, Decimal]] = field(default_factory=dict)
    node_money: dict[int, list[NodeMoney]] = field(default_factory=dict)
    named_balances: dict[str, Decimal] = field(default_factory=dict)
    live_calls: dict[str, LiveCall] = field(default_factory=dict)
    hung_up: list[str] = field(default_factory=list)
    stats: Counters = field(default_factory=Counters)
    reloads_asked: int = 0
    draining: DrainStatus | None = None
    release: Release = field(default_factory=lambda: Release("0.1.0", "0008", "0008"))
    capture: CaptureState | None = None
    captures: dict[tuple[str, str], Path] = field(default_factory=dict)  # (node, CDR id)
    file_sync: FileSyncState | None = None
    vip: VipStatus | None = None

    write_refused: str | None = None  # what write_refusal() answers (None: changes accepted)
    write_checks: int = 0

    async def write_refusal(self) -> str | None:
        self.write_checks += 1
        return self.write_refused

    def balance(self, account_id: int) -> tuple[Decimal, Decimal] | None:
        return self.live_balances.get(account_id)

    def balances(self) -> dict[str, Decimal]:
        return dict(self.named_balances)

    def holdings(self, account_id: int) -> list[NodeMoney]:
        return list(self.node_money.get(account_id, []))

    def calls(self) -> list[LiveCall]:
        return list(self.live_calls.values())

    def hang_up(self, key: str) -> bool:
        if self.live_calls.pop(key, None) is None:
            return False
        self.hung_up.append(key)
        return True

    def counters(self) -> Counters:
        return replace(self.stats, in_progress=len(self.live_calls))

    def engine_state(self) -> EngineState:
        return EngineState(calls=len(self.live_calls))

    def capture_state(self) -> CaptureState | None:
        return self.capture

    def capture_file(self, node: str, cdr_id: str) -> Path | None:
        return self.captures.get((node, cdr_id))

    async def file_sync_state(self) -> FileSyncState | None:
        return self.file_sync

    def vip_status(self) -> VipStatus | None:
        return self.vip

    def config_changed(self) -> None:
        self.reloads_asked += 1

    def drain(self, deadline: float, retry_after: int, flush_timeout: float) -> DrainStatus:
        if self.draining is None:
            self.draining = DrainStatus(
                "draining", len(self.live_calls), 0, retry_after, deadline, 0.0
            )
        return self.draining

    def drain_status(self) -> DrainStatus | None:
        return self.draining

    async def drain_finished(self, timeout: float) -> DrainStatus | None:
        return self.draining


def _conforms(node: FakeNode) -> NodePort:
    return node  # mypy checks that the fake is a NodePort
