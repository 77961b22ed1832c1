"""Where the node's signalling leaves from: the global "bind address" setting (the settings
page; ``ConfigSnapshot.bind_address``) applied to the SIP transport and to the outbound
registrations.

* **Empty** (the default): every node originates (B legs, REGISTERs to suppliers) from its
  own dedicated IP (``dedicated_ip``). Suppliers allow every node's IP; a supplier that
  wants registration gets one registration per node, each node with its own account (or the
  default one). Fail-over and load balancing both work: each node is a complete origin.
* **The shared IP**: calls leave from the shared IP, which one node holds at a time (VRRP,
  keepalived). Only that node originates from it (bound with IP_FREEBIND, so the binding
  does not depend on the order in which the address and the socket appear) and only that node
  registers with suppliers: one highly available registration that follows the VIP. The
  other nodes register with no one and, should a call still reach one of them (at its
  dedicated IP), send its B leg from their dedicated IP.

A node listening on its dedicated IP already (``sip_listen``) sends from there as before;
one listening on a wildcard gets a second socket on the dedicated IP
(:meth:`~smartswitch.transport.endpoint.SipEndpoint.originate_from`).

Whether this node holds the shared IP is asked of ``holds_shared``: a node running keepalived
(:class:`~smartswitch.runtime.node.Node` with ``vip_interface`` set) answers from its
supervisor's VRRP state and calls :meth:`Signalling.shared_ip_changed` on every transition
into or out of MASTER; otherwise: is the address configured on this host now, which is what
keepalived does to the holder. TODO(VIP): decide whether a node without the VIP refuses new
calls rather than sending them from its dedicated IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from smartswitch.routing.views import ConfigViews

if TYPE_CHECKING:
    from smartswitch.runtime.config import NodeConfig
    from smartswitch.runtime.registrar import RegistrarService
    from smartswitch.transport.endpoint import SipEndpoint

__all__ = ["Origination", "Signalling", "holds_address", "origination"]

log = logging.getLogger("smartswitch.runtime.signalling")


@dataclass(frozen=True, slots=True)
class Origination:
    """Where this node's new requests leave from, and whether it registers with suppliers."""

    address: str | None  # None: the listening address (a node without a dedicated IP)
    shared: bool  # the address is the shared IP (bound with IP_FREEBIND)
    registers: bool  # this node registers with the suppliers that want it


def origination(bind_address: str, dedicated_ip: str, holds_shared: bool) -> Origination:
    """The rule of the "bind address" setting for one node (see the module docstring)."""
    if not bind_address:
        return Origination(dedicated_ip or None, shared=False, registers=True)
    if holds_shared:
        return Origination(bind_address, shared=True, registers=True)
    return Origination(dedicated_ip or None, shared=False, registers=False)


def holds_address(ip: str) -> bool:
    """Whether this host carries ``ip`` now: it can be bound without IP_FREEBIND."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True


class Signalling:
    """Keeps the transport's originating address and the outbound registrations in step with
    the bind address setting and (for the shared IP) with who holds it."""

    def __init__(
        self,
        config: NodeConfig,
        endpoint: SipEndpoint,
        registrar: RegistrarService | None,
        clock: Callable[[], float],
        holds_shared: Callable[[str], bool] = holds_address,
    ) -> None:
        self.config = config
        self.endpoint = endpoint
        self.registrar = registrar
        self.clock = clock
        self.holds_shared = holds_shared
        self.bind_address = ""
        self.current: Origination | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def apply(self, bind_address: str) -> Origination:
        """Take the setting: at start (before the registrations start) and whenever the
        configuration changes it. Registrations leave the old address before the socket
        moves and start from the new one."""
        async with self._lock:
            return await self._apply(bind_address)

    async def _apply(self, bind_address: str) -> Origination:
        config = self.config
        self.bind_address = bind_address
        if bind_address and config.shared_ip and bind_address != config.shared_ip:
            log.warning(
                "the signalling bind address %s is not this node's shared IP (%s)",
                bind_address,
                config.shared_ip,
            )
        holds = bool(bind_address) and self.holds_shared(bind_address)
        wanted = origination(bind_address, config.dedicated_ip, holds)
        current = self.current
        if wanted == current:
            return wanted
        registrar = self.registrar
        moving = current is not None and (current.address, current.shared) != (
            wanted.address,
            wanted.shared,
        )
        if registrar is not None and moving:
            registrar.set_originating(False, self.clock())  # unregister from the old address
        try:
            await self.endpoint.originate_from(wanted.address, freebind=wanted.shared)
        except OSError as exc:
            log.error(
                "cannot send signalling from %s: %s; sending from the listening address %s",
                wanted.address,
                exc,
                config.sip_listen,
            )
            await self.endpoint.originate_from(None)
            wanted = replace(wanted, address=None, shared=False)
        self.current = wanted
        if registrar is not None:
            registrar.set_originating(wanted.registers, self.clock())
        log.info(
            "signalling leaves from %s%s",
            wanted.address or config.sip_listen,
            "" if wanted.registers else " (the shared IP is elsewhere: not registering)",
        )
        return wanted

    def views_changed(self, views: ConfigViews) -> None:
        """A new configuration version (a listener of the node's services)."""
        if views.snapshot.bind_address != self.bind_address:
            self._spawn(self.apply(views.snapshot.bind_address))

    def shared_ip_changed(self) -> None:
        """This node took or lost the shared IP (the hook of the VIP supervisor: see the
        module docstring)."""
        self._spawn(self.apply(self.bind_address))

    def _spawn(self, work: Coroutine[Any, Any, Origination]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="signalling")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("applying the signalling bind address failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
