"""One smartswitch node: SIP endpoint, B2BUA, policy and the HTTP side in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Generator

import uvicorn

from smartswitch.b2bua.engine import B2BUA, B2buaSettings
from smartswitch.b2bua.policy import CallPolicy
from smartswitch.config import NodeConfig, parse_hostport
from smartswitch.routing.static import StaticPolicy
from smartswitch.transport.endpoint import SipEndpoint
from smartswitch.web.app import create_app

log = logging.getLogger("smartswitch.node")


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


class Node:
    def __init__(self, config: NodeConfig, policy: CallPolicy | None = None) -> None:
        self.config = config
        host, port = parse_hostport(config.sip_listen)
        self.sip_host, self.sip_port = host, port
        adv = advertised_host(host)
        self.policy = policy or StaticPolicy(config.route, config.accept_any_source)
        self.b2bua = B2BUA(
            self.policy,
            {"udp": (adv, port), "tcp": (adv, port)},
            B2buaSettings(
                no_answer_timeout=config.no_answer_timeout,
                max_call_duration=config.max_call_duration,
                advance_on=frozenset(config.advance_on),
                dialog_ping_interval=config.dialog_ping_interval,
            ),
            wall_clock=time.time,
        )
        self.endpoint: SipEndpoint | None = None
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.endpoint = SipEndpoint(self.b2bua.layer, loop)
        await self.endpoint.listen(self.sip_host, self.sip_port)
        http_host, http_port = parse_hostport(self.config.http_listen)
        server = _Server(
            uvicorn.Config(
                create_app(self),
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
        log.info(
            "smartswitch node %s: SIP on %s (UDP, TCP), HTTP on %s",
            self.config.node_id,
            self.config.sip_listen,
            self.config.http_listen,
        )
        stop_task = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if http_task in done and not self.stopping.is_set():
            http_task.result()  # the HTTP side failed (port taken): raise it
        log.info("shutting down: ending %d calls", len(self.b2bua.calls))
        self.b2bua.shutdown(loop.time())
        self.endpoint.flush()
        await asyncio.sleep(0.1)  # let the BYEs and final answers leave
        self.endpoint.close()
        server.should_exit = True
        await http_task
        stop_task.cancel()
        log.info("stopped")
