"""One smartswitch node: SIP endpoint, B2BUA, policy and the HTTP side in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path

import uvicorn

from smartswitch import __version__
from smartswitch.b2bua.application import SipApplication
from smartswitch.b2bua.engine import B2BUA, B2buaSettings
from smartswitch.b2bua.ports import CallPolicy
from smartswitch.cluster.dispatch import DispatchMode, SourceTrust, Tokens
from smartswitch.cluster.membership import Heartbeat
from smartswitch.cluster.nodebus import NodeBus
from smartswitch.cluster.nodes import list_nodes, register_node
from smartswitch.cluster.replication import DatabaseRole
from smartswitch.cluster.role import database_role
from smartswitch.cluster.vip import KeepalivedSupervisor, VipEvent, VrrpState
from smartswitch.routing.static import StaticPolicy
from smartswitch.runtime import systemd
from smartswitch.runtime.capture import CaptureService, CdrTap
from smartswitch.runtime.config import NodeConfig, parse_hostport
from smartswitch.runtime.dispatcher import Dispatcher, NodeGate
from smartswitch.runtime.drain import Drainer, DrainTarget
from smartswitch.runtime.failover import Failover
from smartswitch.runtime.filesync import FileSyncService
from smartswitch.runtime.liveness import SipProbe
from smartswitch.runtime.media import NodeMedia
from smartswitch.runtime.money import MoneyBus
from smartswitch.runtime.primary import PrimaryFollower
from smartswitch.runtime.services import BillingServices
from smartswitch.runtime.signalling import Signalling
from smartswitch.runtime.webport import WebPort
from smartswitch.sip.flood import FloodGate, FloodSettings
from smartswitch.store.migrate import head_revision, revision_of
from smartswitch.transport.endpoint import SipEndpoint
from smartswitch.transport.tls import TlsContexts, TlsSettings
from smartswitch.web.app import create_app

log = logging.getLogger("smartswitch.runtime.node")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the node owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def advertised_host(host: str) -> str:
    """The address we put in Via and Contact: the bind address, or this host's for a wildcard."""
    if host not in ("0.0.0.0", "::"):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class CallRate:
    """Call attempts per second over the last ``window`` seconds, from the B2BUA's running
    count sampled at each heartbeat (no work on the call path)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, count: int, now: float) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_at, first = samples[0]
        return (count - first) / (now - first_at) if now > first_at else 0.0


class Node:
    """A whole switch. Billing mode (the default) reads peers, tariffs and routes from the
    database; lab mode (``[[route]]`` in the config) routes by prefix with no billing."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.services: BillingServices | None = None
        self.sip: SipApplication
        self.b2bua: B2BUA
        self.endpoint: SipEndpoint | None = None
        self.stopping = asyncio.Event()
        self.db_role = DatabaseRole(config.db_scheme, True, "single")
        self._background: list[asyncio.Task[None]] = []
        self.bus: NodeBus | None = None
        self._rate = CallRate()
        self._schema = ""
        self.signalling: Signalling | None = None
        self.drainer: Drainer | None = None
        self.capture: CaptureService | None = None
        self.filesync: FileSyncService | None = None
        self.media: NodeMedia | None = None
        self.vip: KeepalivedSupervisor | None = None
        self.gate: NodeGate | None = None
        self.dispatcher: Dispatcher | None = None
        self.follower: PrimaryFollower | None = None
        self.failover: Failover | None = None
        self.money: MoneyBus | None = None

    @property
    def read_only(self) -> bool:
        """Configuration may not be changed here: this node's database is a replica, a Galera
        node outside the primary component, or the config says so."""
        return self.config.read_only or not self.db_role.writable

    @property
    def primary_name(self) -> str:
        """Where configuration is edited, for the read-only banner."""
        role = self.db_role
        named = role.primary_node if role.primary_node != self.config.name else ""
        return role.primary or named or self.config.read_only_primary

    async def _register(self) -> None:
        """Put this node in the cluster's configuration (on the primary), retrying until the
        primary answers: every node then knows the others. Registered with the release it
        runs and the newest migration its code carries; on a schema from before those
        columns, again once the schema moved (after `smartswitch db upgrade`)."""
        assert self.services is not None
        services = self.services
        config = self.config
        registered = with_versions = False
        seen_revision: str | None = None
        while True:
            try:
                revision = await revision_of(services.engine)
                services.db_revision = revision
                if not registered or (not with_versions and revision != seen_revision):
                    async with services.money_sessions() as session, session.begin():
                        with_versions = await register_node(
                            session,
                            name=config.node_name or config.node_id,
                            dedicated_ip=config.dedicated_ip,
                            sip_address=config.sip_listen,
                            http_address=config.http_listen,
                            shared_ip=config.shared_ip,
                            db_scheme=config.db_scheme,
                            version=__version__,
                            schema_head=head_revision(),
                        )
                    if not registered and self.bus is not None:
                        self.bus.start_registrations()
                    registered = True
                seen_revision = revision
            except Exception as exc:
                log.info("node not registered on the primary yet: %s", exc)
            await asyncio.sleep(5.0 if registered else 2.0)

    async def _cluster_nodes(self) -> list[tuple[str, str]]:
        assert self.services is not None
        async with self.services.sessions() as session:
            return [(n.name, n.http_address) for n in await list_nodes(session)]

    def _make_bus(self) -> NodeBus | None:
        """The cluster bus of a node with a cluster secret (a cluster node; or a node with its
        own database that shares a VIP with others, whose status the bus serves); None
        without a secret."""
        config = self.config
        if self.services is None or not config.cluster_secret:
            return None
        registrar = self.services.registrar
        self._schema = head_revision()
        return NodeBus(
            config.name,
            config.cluster_secret,
            self._heartbeat,
            self._cluster_nodes,
            location=registrar.location if registrar is not None else None,
            guard=registrar.guard if registrar is not None else None,
            local_address=config.dedicated_ip or None,
        )

    def _heartbeat(self) -> Heartbeat:
        """This node's figures, every second (cheap: counts only, nothing on the call path)."""
        config = self.config
        b2bua = self.b2bua
        now = time.monotonic()
        return Heartbeat(
            node=config.name,
            dedicated_ip=config.dedicated_ip,
            http_address=config.http_listen,
            sip_address=config.sip_listen,
            alive=not self.stopping.is_set(),
            calls=len({id(call) for call in b2bua.calls.values()}),
            cps=round(self._rate.sample(b2bua.stats["calls"], now), 3),
            capacity=config.capacity,
            outbox_depth=self.services.outbox.depth if self.services is not None else 0,
            version=__version__,
            schema=self._schema,
            db_role=self.db_role.role,
        )

    async def _watch_role(self) -> None:
        assert self.services is not None
        while True:
            role = await database_role(self.services.engine, self.config.db_scheme)
            if self.follower is not None:
                role = await self.follower.observe(role)
            if self.failover is not None:
                role = dataclasses.replace(role, failover=self.failover.summary())
            if role.writable != self.db_role.writable:
                log.info(
                    "database role: %s (%s)",
                    role.role,
                    "writable" if role.writable else "read-only",
                )
            self.db_role = role
            await asyncio.sleep(1.0)

    def _dispatcher_takes(self, address: tuple[str, int]) -> bool:
        """Whether this node's dispatcher listens on ``address``: customers' new calls to
        the shared IP's SIP port go to the dispatcher there, so the node's own SIP does not
        listen on it too (load balancing and origination from the shared IP exclude each
        other: the issue's "in this mode load balancing is off")."""
        config = self.config
        if self.bus is None or config.dispatch_mode == DispatchMode.OFF.value:
            return False
        return parse_hostport(config.dispatch_listen) == address

    def _start_dispatch(self, bus: NodeBus | None) -> None:
        """The gate of a cluster node (the source header believed from members only, the
        tokens checked when required), and the dispatcher where ``dispatch_mode`` says."""
        config = self.config
        if bus is None or not config.cluster_secret:
            return
        tokens = Tokens(config.cluster_secret, config.dispatch_token_lifetime)
        trust = SourceTrust({config.name: config.dedicated_ip})
        self.gate = NodeGate(config.name, trust, tokens, config.dispatch_require_token)
        self.sip.gate = self.gate
        bus.metric_sources.append(self.gate.metrics)
        self._background.append(
            asyncio.create_task(self._watch_members(bus, trust), name="dispatch-trust")
        )
        mode = DispatchMode(config.dispatch_mode)
        if mode is DispatchMode.OFF:
            return
        policy = self.services.policy if self.services is not None else None

        def attached(host: str, port: int) -> frozenset[str] | None:
            """The nodes a customer at ``host`` is attached to (None: any, or unknown)."""
            peer = policy.views.acl.match(host, port) if policy is not None else None
            return peer.nodes if peer is not None and peer.nodes else None

        sip_host, _ = parse_hostport(config.sip_listen)
        listen = parse_hostport(config.dispatch_listen)
        self.dispatcher = Dispatcher(
            mode,
            listen,
            config.dedicated_ip or advertised_host(sip_host),
            lambda: bus.membership.up(time.monotonic()),
            tokens,
            attached,
            freebind=bool(config.shared_ip) and listen[0] == config.shared_ip,
        )
        bus.metric_sources.append(self.dispatcher.metrics)

    async def _trusted_members(self, bus: NodeBus) -> dict[str, str]:
        """The members' dedicated IPs, whose source header this node believes: the ``nodes``
        table (the cluster's configuration, replicated) and the nodes heard on the bus.

        The table matters at start: a dispatcher hears a node that has just started (its
        heartbeats go out at once) up to the dispatcher's next peer refresh (5 s) before
        that node hears the dispatcher, and forwards it calls meanwhile; trusting only the
        nodes heard would refuse those calls (the caller taken for the dispatcher's own
        address: no customer there). bench/dispatch.py lost 43 calls of 500 that way."""
        members = {self.config.name: self.config.dedicated_ip}
        if self.services is not None:
            try:
                async with self.services.sessions() as session:
                    for row in await list_nodes(session):
                        if row.dedicated_ip:
                            members[row.name] = row.dedicated_ip
            except Exception as exc:
                log.info("cluster nodes not read for the dispatch gate: %s", exc)
        for state in bus.members():
            if state.heartbeat is not None:
                members[state.node] = state.heartbeat.dedicated_ip
        return members

    async def _watch_members(self, bus: NodeBus, trust: SourceTrust) -> None:
        while True:
            trust.set_members(await self._trusted_members(bus))
            await asyncio.sleep(1.0)

    async def _start_bus(self, server: uvicorn.Server, bus: NodeBus) -> None:
        """Heartbeats start once the bus routes are served (the others answer ours at once)."""
        while not server.started:
            await asyncio.sleep(0.05)
        bus.start()

    def calls_in_progress(self) -> int:
        # A call is filed under more than one key (its A and B Call-IDs).
        return len({id(call) for call in self.b2bua.calls.values()})

    def drain(self, deadline: float, retry_after: int, flush_timeout: float = 30.0) -> Drainer:
        """Start draining (runtime/drain.py): refuse new calls, let these end, flush the
        outbox, stop. A second request while draining returns the drain under way."""
        if self.drainer is None:
            loop = asyncio.get_running_loop()
            services = self.services

            def end_calls() -> None:
                self.b2bua.shutdown(loop.time())
                if self.endpoint is not None:
                    self.endpoint.flush()

            async def flush_appends() -> None:
                if services is not None:
                    await services.outbox.drain_appends()

            target = DrainTarget(
                refuse_calls=self.sip.refuse_new_calls,
                calls=self.calls_in_progress,
                end_calls=end_calls,
                outbox_depth=lambda: services.outbox.depth if services is not None else None,
                flush_appends=flush_appends,
                stop=self.stopping.set,
            )
            self.drainer = Drainer(
                target,
                loop.time,
                deadline=deadline,
                retry_after=retry_after,
                flush_timeout=flush_timeout,
            )
            self.drainer.start()
        return self.drainer

    def _identified(
        self, known: Callable[[str, str, int], bool]
    ) -> Callable[[str, str, int], bool]:
        """Known sources for the flood gate: the policy's peers, this node's own addresses
        (its liveness probe and keepalived's health check send it OPTIONS from them; held to
        the byte rule, their single probe would get no answer), and the cluster members'
        dedicated IPs (a dispatcher in proxy mode forwards every customer's calls from its
        own: held to one source's rate, the calls past it were dropped unanswered)."""
        config = self.config
        own = {"127.0.0.1", "::1", parse_hostport(config.sip_listen)[0]}
        own |= {a for a in (config.dedicated_ip, config.shared_ip) if a}

        def identified(transport: str, host: str, port: int) -> bool:
            gate = self.gate
            return (
                host in own
                or known(transport, host, port)
                or (gate is not None and gate.trust.is_member(host))
            )

        return identified

    def _holds_shared(self, address: str) -> bool:
        vip = self.vip
        return vip is not None and vip.holder and address == vip.settings.shared_ip

    def _vip_changed(self, event: VipEvent) -> None:
        """keepalived reported a state change: origination and registrations follow."""
        if VrrpState.MASTER in (event.state, event.previous) and self.signalling is not None:
            self.signalling.shared_ip_changed()

    def _start_money(self) -> None:
        """Money across nodes (runtime/money.py) on the node's cluster bus: its handlers among
        the bus routes (before the web app asks for them), its holdings in every heartbeat and
        posted at once on change, the others' taken from their heartbeats and posts."""
        services = self.services
        bus = self.bus
        if services is None or services.ledger is None or bus is None:
            return
        self.money = MoneyBus(services.ledger, bus, clock=asyncio.get_running_loop().time)
        self.money.start()

    def _build_sip(self, policy: CallPolicy) -> SipApplication:
        config = self.config
        host, port = parse_hostport(config.sip_listen)
        adv = advertised_host(host)
        return SipApplication(
            policy,
            {"udp": (adv, port), "tcp": (adv, port)},
            B2buaSettings(
                no_answer_timeout=config.no_answer_timeout,
                max_call_duration=config.max_call_duration,
                advance_on=frozenset(config.advance_on),
                dialog_ping_interval=config.dialog_ping_interval,
                dialog_ping_timeout=config.dialog_ping_timeout,
            ),
        )

    async def _start_capture(self, services: BillingServices, endpoint: SipEndpoint) -> None:
        """Call capture and, in a cluster, the file sync that copies captures (and
        recordings) to every node."""
        config = self.config
        policy = services.policy
        assert policy is not None
        if FileSyncService.wanted(config):
            self.filesync = FileSyncService(config, services.sessions)
            try:
                await self.filesync.start()
            except Exception:
                log.exception("file sync did not start; files stay on this node")
                self.filesync = None
        sync = self.filesync
        capture = CaptureService(
            config.data_dir,
            config.name,
            endpoint,
            on_written=sync.add if sync is not None else None,
            on_deleted=sync.forget if sync is not None else None,
            on_retention=sync.retention_changed if sync is not None else None,
            retention_interval=config.capture_retention_interval,
            linger=config.capture_linger,
        )
        b2bua = self.b2bua

        def observe(observer: CaptureService | None) -> None:
            b2bua.observer = observer

        capture.start(observe)
        # The CDR names the call's file: the policy's sink tells the capture first.
        policy.records = replace(policy.records, sink=CdrTap(policy.records.sink, capture))
        services.listeners.append(capture.views_changed)
        capture.apply(policy.views.snapshot)
        self.capture = capture

    async def _listen_tls(self, loop: asyncio.AbstractEventLoop) -> None:
        """The TLS listener, and the watch that reloads its certificate when the files change
        (every ``tls_reload_interval`` seconds, and at once on SIGHUP)."""
        config = self.config
        assert self.endpoint is not None
        contexts = TlsContexts(
            TlsSettings(
                cert=Path(config.tls_cert),
                key=Path(config.tls_key),
                ca=Path(config.tls_ca) if config.tls_ca else None,
                verify_peers=config.tls_verify_peers,
            )
        )
        host, port = parse_hostport(config.tls_listen)
        await self.endpoint.listen_tls(host, port, contexts)
        if self.services is not None and self.services.policy is not None:
            # Mutual TLS: a peer known by its client certificate.
            self.services.policy.certificate_of = self.endpoint.peer_certificate
        loop.add_signal_handler(signal.SIGHUP, contexts.reload_if_changed)
        if config.tls_reload_interval > 0:
            self._background.append(
                asyncio.create_task(self._watch_tls(contexts), name="tls-reload")
            )

    async def _watch_tls(self, contexts: TlsContexts) -> None:
        while True:
            await asyncio.sleep(self.config.tls_reload_interval)
            contexts.reload_if_changed()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        policy: CallPolicy
        if config.route:
            log.warning("lab mode: routing by the [[route]] list of the config, no billing")
            policy = StaticPolicy(config.route, config.accept_any_source)
        else:
            self.services = BillingServices(config, lambda: time.time() - loop.time())
            policy = await self.services.start()
            self.db_role = await database_role(self.services.engine, config.db_scheme)
            # The cluster bus, served by the node's HTTP server (its http_listen, on the
            # dedicated IP; its routes verify every request themselves). Made before the
            # registration below, which starts its registration sync.
            self.bus = self._make_bus()
            self.follower = PrimaryFollower(config, self.services, self.bus)
            if config.etcd_members and config.db_scheme == "replication":
                if self.bus is None:
                    # Promotion asks the other nodes on the signed bus, which needs the secret.
                    log.error("etcd_members set but no cluster_secret: no automatic failover")
                else:
                    self.failover = Failover(
                        config, self.services, self.follower, lambda: self.db_role, self.bus.client
                    )
                    self.failover.start()
            self._background.append(asyncio.create_task(self._watch_role(), name="role-watch"))
            if config.db_scheme != "single":
                self._background.append(asyncio.create_task(self._register(), name="register"))
        self.sip = self._build_sip(policy)
        self.b2bua = self.sip.b2bua
        if self.services is not None and self.services.policy is not None:
            # Billing mode: who is not known by address or certificate is held to a rate and
            # answered with no more bytes than it sent. Lab mode has no one to tell apart.
            self.sip.layer.gate = FloodGate(
                FloodSettings(
                    rate=config.flood_rate,
                    burst=config.flood_burst,
                    total_rate=config.flood_total_rate,
                    total_burst=config.flood_total_burst,
                ),
                identified=self._identified(self.services.policy.known_source),
            )
        self.endpoint = SipEndpoint(self.sip.layer, loop)
        self.b2bua.clock = loop.time
        self.b2bua.resume = self.endpoint.run
        host, port = parse_hostport(config.sip_listen)
        await self.endpoint.listen(host, port, advertised_host(host))
        if config.tls_listen:
            await self._listen_tls(loop)
        vip_settings = config.vip_settings()
        if vip_settings is not None:
            if not self._dispatcher_takes((vip_settings.shared_ip, port)):
                # Listening on the shared IP before keepalived may put it here (IP_FREEBIND):
                # the first datagram after a take-over finds the socket.
                await self.endpoint.listen_shared(vip_settings.shared_ip)
            self.vip = KeepalivedSupervisor(vip_settings, data_dir=config.data_dir)
        # Where B legs and outbound registrations leave from (the "bind address" setting):
        # applied before the registrations start, and again when the setting changes.
        registrar = self.services.registrar if self.services is not None else None
        vip = self.vip
        if vip is not None:
            # With the "bind address" = the shared IP, only the holder originates and
            # registers; keepalived's word (its notify FIFO) says who holds it.
            self.signalling = Signalling(
                config, self.endpoint, registrar, loop.time, holds_shared=self._holds_shared
            )
        else:
            self.signalling = Signalling(config, self.endpoint, registrar, loop.time)
        if config.media_enabled:
            interface = config.media_interface or config.dedicated_ip or advertised_host(host)
            self.media = NodeMedia(config, self.b2bua, self.endpoint.run, interface)
            await self.media.start()
        if self.services is not None and self.services.policy is not None:
            self.services.listeners.append(self.signalling.views_changed)
            await self.signalling.apply(self.services.policy.views.snapshot.bind_address)
        else:
            await self.signalling.apply("")
        if self.services is not None and self.services.policy is not None:
            await self._start_capture(self.services, self.endpoint)
        if self.media is not None and self.filesync is not None:
            self.media.sync_files(self.filesync.add, self.filesync.forget)
        self._start_dispatch(self.bus)
        if self.gate is not None and self.bus is not None:
            # Before this node's heartbeats go out (the bus starts with HTTP, below): a
            # dispatcher that hears them may forward calls at once.
            self.gate.trust.set_members(await self._trusted_members(self.bus))
        if self.dispatcher is not None:
            await self.dispatcher.start()
        if self.services is not None and self.services.registrar is not None:
            # REGISTER handling and the outbound registrations; they send from here, outside
            # any network callback, so attach() flushes the endpoint itself.
            self.services.registrar.attach(self.sip, self.endpoint.flush, loop.time())
        if vip is not None:
            vip.on_state.append(self._vip_changed)
            # keepalived's check asks this node's SIP loop, which answers from now on. A
            # config keepalived refuses stops the node here (VipError), before HTTP starts.
            await vip.start()
        http_host, http_port = parse_hostport(self.config.http_listen)
        self._start_money()
        app = create_app(WebPort(self))
        server = _Server(
            uvicorn.Config(
                app,
                host=http_host,
                port=http_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        http_task = asyncio.create_task(server.serve())
        if self.bus is not None:
            self._background.append(
                asyncio.create_task(self._start_bus(server, self.bus), name="bus-start")
            )
        log.info(
            "smartswitch node %s: SIP on %s (UDP, TCP)%s, HTTP on %s",
            self.config.node_id,
            self.config.sip_listen,
            f", TLS on {self.config.tls_listen}" if self.config.tls_listen else "",
            self.config.http_listen,
        )
        # What start-up built (modules, configuration views) lives as long as the process:
        # keep it out of every later garbage collection, which then pauses the loop for less
        # (measured in bench: worst full-collection pause 0.47 s -> 0.26 s at 1 000 calls/s).
        gc.collect()
        gc.freeze()
        # Under systemd (Type=notify): serving now; the watchdog is fed from this loop, and
        # only while our SIP port answers (runtime/systemd.py, runtime/liveness.py).
        while not server.started and not http_task.done():
            await asyncio.sleep(0.01)
        systemd.notify("READY=1", f"STATUS=serving SIP on {config.sip_listen}")
        watchdog = asyncio.create_task(systemd.watchdog_task(SipProbe(host, port)), name="watchdog")
        stop_task = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if http_task in done and not self.stopping.is_set():
            http_task.result()  # the HTTP side failed (port taken): raise it
        if self.vip is not None:
            # Give the shared IP up first (a priority-0 advert: a backup takes it at once),
            # then end the calls.
            await self.vip.stop()
        systemd.notify("STOPPING=1", "STATUS=stopping")
        watchdog.cancel()
        if self.drainer is not None:
            self.drainer.cancel()  # done already, or overtaken by SIGTERM
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.money is not None:
            await self.money.close()  # before the bus: it sends with the bus's client
        if self.bus is not None:
            # Down everywhere at once (a farewell heartbeat), before the calls are ended.
            await self.bus.close()
        log.info("shutting down: ending %d calls", len(self.b2bua.calls))
        self.b2bua.shutdown(loop.time())
        if self.services is not None and self.services.registrar is not None:
            self.services.registrar.detach(loop.time())  # unregister from suppliers
        if self.services is not None:
            await self.services.outbox.drain_appends()  # the ended calls' BYEs wait on it
            await asyncio.sleep(0)
        self.endpoint.flush()
        await asyncio.sleep(0.1)  # let the BYEs and final answers leave
        if self.media is not None:
            await self.media.close()  # the ended calls' sessions deleted at the relay first
            self.endpoint.flush()
        self.endpoint.close()
        server.should_exit = True
        await http_task
        stop_task.cancel()
        await self.signalling.close()
        if self.capture is not None:
            await self.capture.close()  # the calls that just ended get their files
        if self.filesync is not None:
            await self.filesync.close()
        for task in self._background:
            task.cancel()
        if self.failover is not None:
            await self.failover.close()
        if self.services is not None:
            await self.services.close()
        log.info("stopped")
