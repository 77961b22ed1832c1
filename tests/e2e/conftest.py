"""End-to-end harness: a real node, real sipp, loopback addresses.

Addresses: every address in 127.0.0.0/8 is local, so each party has its own
and a leak of one side's address into the other's messages is visible:

- the node on ``127.0.0.1``,
- the caller (sipp UAC) on ``127.0.0.2``,
- callees (sipp UAS) on ``127.0.0.3`` and ``127.0.0.4``.

Ports are chosen free at run time (other engineers' sipp and nodes run on this
machine too). Fixtures:

- ``start_node(*routes, accept_any_source=True, **config)`` writes the TOML
  config, starts ``smartswitch run``, waits for ``/health``; at teardown the
  node is stopped by SIGTERM to its PID and must exit 0.
- ``start_billing_node(document, **config)``: billing mode. The provisioning
  document (YAML text, a mapping or a file) is applied with ``smartswitch
  provision`` to the node's fresh data directory, then the node starts with no
  ``[[route]]``; ``node.cdrs()``, ``node.accounts()``, ``node.audit()`` and
  ``node.provision(...)`` run the operator commands on its data directory.
- ``sipp``: ``sipp.uas(...)`` starts a callee in the background (waits until
  it listens), ``sipp.uac(...)`` runs a caller to completion
  (``sipp.uac_background(...)`` returns at once); anything still running at
  teardown is stopped by PID.
- ``stunnels``: ``stunnels.before_uac(...)`` / ``stunnels.before_uas(...)`` start a stunnel
  (tests/e2e/stunnel.py) that puts TLS in front of a sipp in TCP mode; stopped by PID at
  teardown.

When a test fails, its report gets a section per node (log tail) and per sipp
(outcome, message flow, errors.log); every file stays in the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from .node import Node, NodeError, NodeSpec, sip_uri
from .sipp import Sipp, SippOptions, SippResult, Transport, free_port, sipp_binary
from .stunnel import Stunnel

NODE_IP = "127.0.0.1"
CALLER_IP = "127.0.0.2"
CALLEE_IP = "127.0.0.3"
CALLEE2_IP = "127.0.0.4"
#: The dialled user part (sipp -s); routes in the tests use prefix "1".
DIALLED = "15551234567"


class Reportable(Protocol):
    def report(self) -> str: ...


@dataclass
class _Artifacts:
    """What a test started, for its failure report."""

    items: list[tuple[str, Reportable]] = field(default_factory=list)


_ARTIFACTS = pytest.StashKey[_Artifacts]()


def _artifacts(request: pytest.FixtureRequest) -> _Artifacts:
    stash: pytest.Stash = request.node.stash
    if _ARTIFACTS not in stash:
        stash[_ARTIFACTS] = _Artifacts()
    return stash[_ARTIFACTS]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _ARTIFACTS in item.stash:
        for title, thing in item.stash[_ARTIFACTS].items:
            try:
                text = thing.report()
            except Exception as exc:  # a report must never hide the failure
                text = f"(no report: {exc!r})"
            report.sections.append((f"{title} ({report.when})", text))
    return report


@pytest.fixture(scope="session", autouse=True)
def _sipp_installed() -> None:
    try:
        sipp_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


class _NodeReport:
    def __init__(self, node: Node) -> None:
        self.node = node

    def report(self) -> str:
        node = self.node
        state = "running" if node.running else f"exit {node.returncode}"
        pid = node.pid if node.started else "-"
        return (
            f"node {node.sip_address} pid {pid} ({state})\nconfig {self.node.config_path}:\n"
            f"{self.node.config_path.read_text() if self.node.config_path.exists() else ''}\n"
            f"{self.node.log_tail(150)}"
        )


StartNode = Callable[..., Node]
StartBillingNode = Callable[..., Node]


@pytest.fixture
def start_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartNode]:
    """Factory: ``start_node(route("1", dest), no_answer_timeout=1)``.

    ``accept_any_source`` defaults to True here (most tests are about calls,
    not admission); pass ``accept_any_source=None`` to leave the key out and
    get the node's default (False: every INVITE answered 403).
    """
    nodes: list[Node] = []

    def factory(
        *routes: dict[str, Any],
        accept_any_source: bool | None = True,
        log_level: str = "debug",
        provision: str | Mapping[str, Any] | Path | None = None,
        **config: Any,
    ) -> Node:
        settings: dict[str, Any] = {"log_level": log_level}
        if accept_any_source is not None:
            settings["accept_any_source"] = accept_any_source
        settings.update(config)
        if routes:
            settings["route"] = list(routes)
        spec = NodeSpec(workdir=tmp_path / f"node{len(nodes) + 1}", sip_host=NODE_IP)
        spec.config = settings
        node = Node(spec)
        nodes.append(node)
        _artifacts(request).items.append((f"node {len(nodes)}", _NodeReport(node)))
        try:
            if provision is not None:
                node.provision(provision)
            node.start()
        except NodeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return node

    yield factory

    problems = []
    for node in nodes:
        try:
            node.stop_cleanly()
        except NodeError as exc:
            problems.append(str(exc))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def start_billing_node(start_node: StartNode) -> StartBillingNode:
    """Factory for a node in billing mode: ``start_billing_node(document, **config)``
    applies the provisioning ``document`` (YAML text, a mapping, or a file) with
    ``smartswitch provision`` to a fresh data directory, then starts the node with no
    ``[[route]]`` and the default ``accept_any_source`` (false): every call is
    identified, authorised, routed, rated and recorded."""

    def factory(document: str | Mapping[str, Any] | Path, **config: Any) -> Node:
        config.setdefault("log_level", "info")
        return start_node(accept_any_source=None, provision=document, **config)

    return factory


class SippFactory:
    """Starts sipp instances for one test, each in its own directory."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp_path = tmp_path
        self._started: list[Sipp] = []

    def _new(self, name: str | None, kind: str, options: SippOptions) -> Sipp:
        label = name or f"{kind}{sum(1 for s in self._started if s.name.startswith(kind)) + 1}"
        proc = Sipp(label, options, self._tmp_path / f"sipp-{label}")
        self._started.append(proc)
        _artifacts(self._request).items.append((f"sipp {label}", proc))
        return proc

    def uas(
        self,
        scenario: str | Path = "uas_answer",
        *,
        ip: str = CALLEE_IP,
        transport: Transport = "udp",
        calls: int | None = 1,
        name: str | None = None,
        timeout_s: float = 60.0,
        recv_timeout_ms: int | None = 10000,
        **kwargs: Any,
    ) -> Sipp:
        """A callee listening on ``ip`` at a free port. With ``calls`` it
        exits by itself after that many calls (then :meth:`Sipp.wait`);
        ``calls=None`` runs until stopped (for "must receive nothing")."""
        options = SippOptions(
            scenario=scenario,
            local_ip=ip,
            local_port=free_port(ip),
            transport=transport,
            calls=calls,
            timeout_s=timeout_s,
            recv_timeout_ms=recv_timeout_ms,
            **kwargs,
        )
        proc = self._new(name, "uas", options).start()
        proc.wait_until_listening()
        return proc

    def uac(
        self,
        target: str,
        scenario: str | Path = "uac",
        *,
        ip: str = CALLER_IP,
        transport: Transport = "udp",
        calls: int = 1,
        rate: float = 10,
        duration_ms: int = 200,
        service: str = DIALLED,
        name: str | None = None,
        timeout_s: float = 30.0,
        recv_timeout_ms: int | None = 5000,
        **kwargs: Any,
    ) -> SippResult:
        """Run a caller against ``target`` (``HOST:PORT``) to completion."""
        return self.uac_background(
            target,
            scenario,
            ip=ip,
            transport=transport,
            calls=calls,
            rate=rate,
            duration_ms=duration_ms,
            service=service,
            name=name,
            timeout_s=timeout_s,
            recv_timeout_ms=recv_timeout_ms,
            **kwargs,
        ).wait()

    def uac_background(
        self,
        target: str,
        scenario: str | Path = "uac",
        *,
        ip: str = CALLER_IP,
        transport: Transport = "udp",
        calls: int = 1,
        rate: float = 10,
        duration_ms: int = 200,
        service: str = DIALLED,
        name: str | None = None,
        timeout_s: float = 30.0,
        recv_timeout_ms: int | None = 5000,
        **kwargs: Any,
    ) -> Sipp:
        """Start a caller against ``target`` and return at once (then
        :meth:`Sipp.wait` or :meth:`Sipp.stop`)."""
        options = SippOptions(
            scenario=scenario,
            local_ip=ip,
            local_port=free_port(ip),
            remote=target,
            transport=transport,
            service=service,
            calls=calls,
            rate=rate,
            duration_ms=duration_ms,
            timeout_s=timeout_s,
            recv_timeout_ms=recv_timeout_ms,
            **kwargs,
        )
        return self._new(name, "uac", options).start()

    @staticmethod
    def uri(uas: Sipp) -> str:
        """The route destination URI of a callee started by :meth:`uas`."""
        return sip_uri(uas.options.local_ip, uas.options.local_port, uas.options.transport)

    @staticmethod
    def address(uas: Sipp) -> str:
        """``HOST:PORT`` of a callee, to call it directly (no node)."""
        return f"{uas.options.local_ip}:{uas.options.local_port}"

    def stop_all(self) -> None:
        for proc in reversed(self._started):
            if proc.running:
                proc.stop()


@pytest.fixture
def sipp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SippFactory]:
    factory = SippFactory(request, tmp_path)
    yield factory
    factory.stop_all()


class StunnelFactory:
    """Starts the stunnels of one test (tests/e2e/stunnel.py), each in its own directory, and
    stops them by PID at teardown."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp_path = tmp_path
        self._started: list[Stunnel] = []

    def _start(self, tunnel: Stunnel) -> Stunnel:
        self._started.append(tunnel)
        _artifacts(self._request).items.append((f"stunnel {tunnel.name}", tunnel))
        return tunnel.start()

    def before_uac(self, name: str, *, local: str, node: tuple[str, int], cert: Path,
                   key: Path, ca: Path) -> Stunnel:  # fmt: skip
        """TLS from ``local`` to ``node`` for a sipp UAC (give it ``-rsa tunnel.address``)."""
        workdir = self._tmp_path / f"stunnel-{name}"
        return self._start(
            Stunnel.before_uac(name, workdir, local=local, node=node, cert=cert, key=key, ca=ca)
        )

    def before_uas(self, name: str, *, uas: tuple[str, int], cert: Path, key: Path,
                   ca: Path) -> Stunnel:  # fmt: skip
        """TLS in front of the sipp UAS at ``uas``: the peer's address is ``tunnel.address``."""
        workdir = self._tmp_path / f"stunnel-{name}"
        return self._start(Stunnel.before_uas(name, workdir, uas=uas, cert=cert, key=key, ca=ca))

    def stop_all(self) -> None:
        for tunnel in reversed(self._started):
            tunnel.stop()


@pytest.fixture
def stunnels(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StunnelFactory]:
    factory = StunnelFactory(request, tmp_path)
    yield factory
    factory.stop_all()
