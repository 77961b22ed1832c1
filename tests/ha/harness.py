"""Switch nodes holding a shared IP in a :class:`~netlab.NetLab`, and a customer probing it.

- :class:`VipNode`: one :mod:`ha.vipnode` driver (a keepalived supervisor and a SIP stand-in)
  in a lab host, its reported events read on a thread. :meth:`VipNode.crash` kills it the way
  a host dies: keepalived's process group, then the driver's (responder included), SIGKILL.
- :class:`Prober`: :mod:`ha.prober` in the customer host, every answer kept with its time.
- :class:`VipCluster`: the nodes and the prober together, with the waits the tests need.

All times are ``time.monotonic()``, the same clock in every namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netlab import NetLab, pid_alive, wait_for
from smartswitch.cluster.vip import VipSettings

ROOT = Path(__file__).resolve().parents[2]
SHARED_IP = "10.77.0.100"
VRID = 51
PRIORITIES = {"n1": 150, "n2": 140, "n3": 130}
#: Seconds between the customer's probes: the resolution of every measured time.
PROBE_INTERVAL = 0.01


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}:{ROOT / 'tests'}"
    return env


def settings_for(lab: NetLab, name: str, nodes: list[str]) -> VipSettings:
    host = lab.host(name)
    return VipSettings(
        shared_ip=SHARED_IP,
        interface=host.interface,
        virtual_router_id=VRID,
        priority=PRIORITIES[name],
        unicast_src_ip=host.address,
        peers=tuple(lab.host(n).address for n in nodes if n != name),
        sip_check_host=host.address,
        node_name=name,
    )


class _Lines:
    """Lines of a process's stdout, read on a thread, waited for with a condition."""

    def __init__(self, proc: subprocess.Popen[str], parse: Callable[[str], Any]) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()
        self._proc = proc
        self._parse = parse
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                item = self._parse(line)
            except ValueError:
                continue
            if item is None:
                continue
            with self._cond:
                self.items.append(item)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.items)

    def wait(self, predicate: Callable[[Any], bool], timeout: float, start: int = 0) -> Any:
        """The first item from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.items[start:]:
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching line within {timeout:.2f} s")
                self._cond.wait(min(remaining, 0.05))


@dataclass
class VipNode:
    lab: NetLab
    name: str
    data_dir: Path
    settings: VipSettings
    proc: subprocess.Popen[str] | None = None
    keepalived_pid: int | None = None
    responder_pid: int | None = None
    started: dict[str, Any] = field(default_factory=dict)
    _lines: _Lines | None = None

    def start(self, timeout: float = 15.0) -> dict[str, Any]:
        """Start the driver; returns its "started" event (keepalived running)."""
        with open(self.data_dir.parent / f"{self.name}-driver.log", "a") as log:
            self.proc = self.lab.popen(
                self.name,
                [
                    sys.executable,
                    "-m",
                    "ha.vipnode",
                    str(self.data_dir),
                    json.dumps(asdict(self.settings)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env(),
            )
        self._lines = _Lines(self.proc, json.loads)
        self.started = self._lines.wait(lambda e: e["event"] == "started", timeout)
        self.keepalived_pid = self.started["keepalived_pid"]
        self.responder_pid = self.started["responder_pid"]
        return self.started

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        return [] if self._lines is None else self._lines.snapshot()

    def states(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "state"]

    @property
    def state(self) -> str:
        states = self.states()
        return states[-1]["state"] if states else "STOPPED"

    def wait_state(self, state: str, timeout: float, after: float = 0.0) -> dict[str, Any]:
        """The first "state" event into ``state`` seen after monotonic time ``after``."""
        assert self._lines is not None
        event: dict[str, Any] = self._lines.wait(
            lambda e: e["event"] == "state" and e["state"] == state and e["at_mono"] >= after,
            timeout,
        )
        return event

    def command(self, line: str, reply: str, timeout: float = 5.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self._lines is not None
        start = len(self._lines.snapshot())
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        event: dict[str, Any] = self._lines.wait(lambda e: e["event"] == reply, timeout, start)
        return event

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.command("status", "status")["status"]
        return status

    def crash(self) -> float:
        """SIGKILL keepalived's process group, then the driver's (supervisor and SIP
        responder): nothing gets to clean up, as when the host dies. Returns the time of the
        first kill."""
        assert self.proc is not None
        # Its keepalived now (the supervisor may have restarted the one it started with).
        self.keepalived_pid = self.status()["keepalived_pid"]
        assert self.keepalived_pid is not None
        killed = time.monotonic()
        self.lab.kill(self.keepalived_pid)
        self.lab.kill(self.proc)
        self.proc.wait(timeout=5.0)
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: not pid_alive(self.keepalived_pid or 0),
                5.0,
                what="keepalived gone",
            )
        return killed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it cleanly (the supervisor stops keepalived)."""
        if not self.running:
            return
        assert self.proc is not None
        with contextlib.suppress(OSError, TimeoutError):
            self.command("stop", "stopped", timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.lab.kill(self.proc)
            self.proc.wait(timeout=5.0)

    def stop_responder(self) -> None:
        """The SIP loop is stuck (SIGSTOP)."""
        assert self.responder_pid is not None
        os.kill(self.responder_pid, signal.SIGSTOP)

    def resume_responder(self) -> None:
        assert self.responder_pid is not None
        os.kill(self.responder_pid, signal.SIGCONT)


@dataclass(frozen=True, slots=True)
class Answer:
    at: float
    node: str
    source: str


def _parse_answer(line: str) -> Answer | None:
    parts = line.split()
    if len(parts) != 3:
        return None
    return Answer(float(parts[0]), parts[1], parts[2])


class Prober:
    """The customer's probes of the shared IP, every ``PROBE_INTERVAL`` s."""

    def __init__(self, lab: NetLab, host: str, target: str, duration: float) -> None:
        self.proc = lab.popen(
            host,
            [sys.executable, "-m", "ha.prober", target, str(PROBE_INTERVAL), str(duration)],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        self._lines = _Lines(self.proc, _parse_answer)

    def answers(self, after: float = 0.0) -> list[Answer]:
        return [a for a in self._lines.snapshot() if a.at >= after]

    def wait_answer(self, predicate: Callable[[Answer], bool], timeout: float) -> Answer:
        answer: Answer = self._lines.wait(predicate, timeout)
        return answer

    def first_from(self, nodes: set[str], after: float, timeout: float) -> Answer:
        """The first answer from one of ``nodes`` after ``after``."""
        return self.wait_answer(lambda a: a.at >= after and a.node in nodes, timeout)


@dataclass
class VipCluster:
    lab: NetLab
    nodes: dict[str, VipNode]
    prober: Prober

    def __iter__(self) -> Iterator[VipNode]:
        return iter(self.nodes.values())

    def holders(self) -> list[str]:
        """The nodes whose interface carries the shared IP now."""
        return [n.name for n in self if SHARED_IP in self.lab.addresses_of(n.name)]

    def wait_one_holder(self, timeout: float) -> str:
        def one() -> str | None:
            holders = self.holders()
            return holders[0] if len(holders) == 1 else None

        return wait_for(one, timeout, what="exactly one holder of the shared IP")

    def ready(self, timeout: float = 20.0) -> str:
        """Every node running, no cut, one holder that the customer reaches, every other node
        BACKUP. Returns the holder."""
        self.lab.heal_all()
        for node in self:
            if node.proc is not None and node.proc.stdout is not None and not node.running:
                node.proc.stdout.close()
            if not node.running:
                node.start()
        for node in self:
            with contextlib.suppress(OSError):
                node.resume_responder()
        holder = self.wait_one_holder(timeout)

        def settled() -> bool:
            return all(n.state == ("MASTER" if n.name == holder else "BACKUP") for n in self)

        wait_for(settled, timeout, what="every node settled")
        now = time.monotonic()
        self.prober.first_from({holder}, now, timeout)
        return holder


def summary(values: list[float]) -> str:
    return (
        f"n={len(values)} median={statistics.median(values) * 1000:.0f} ms"
        f" max={max(values) * 1000:.0f} ms min={min(values) * 1000:.0f} ms"
        f" all=[{', '.join(f'{v * 1000:.0f}' for v in values)}] ms"
    )
