"""The registrar side of a billing node: the sans-IO pieces wired to the SIP application and
the store.

One object per node, made by :class:`~smartswitch.runtime.services.BillingServices`:

* :attr:`location`, :attr:`guard` are handed to the billing policy too (DID calls go to the
  bindings; INVITE digest failures count towards the same bans as REGISTER ones);
* :meth:`attach` (once the SIP application exists) takes its REGISTERs (it is the
  application's :class:`~smartswitch.b2bua.ports.Registrations`), arms the expiry sweep in the
  layer's timer heap and starts the outbound registrations of the suppliers that want them;
* :meth:`update` follows configuration changes (subscribers, suppliers' ``register``);
  each node registers its own account, and only while it originates (:meth:`set_originating`);
* :meth:`detach` / :meth:`close` unregister from suppliers and write the last bindings.

Clocks: the transaction layer runs on the event loop's monotonic clock; bindings are kept in
wall-clock time (``loop time + wall_offset()``) because they are persisted and shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.registrar.location import RESTORED, LocationService
from smartswitch.registrar.outbound import OutboundRegistrations
from smartswitch.registrar.registrar import Registrar, RegistrarSettings
from smartswitch.registrar.store import RegistrationStore
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.digest import DigestAuthenticator
from smartswitch.sip.message import Request, Response
from smartswitch.sip.timers import Timer, TimerHeap
from smartswitch.sip.transaction import Address

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from smartswitch.b2bua.application import SipApplication
    from smartswitch.runtime.config import NodeConfig

__all__ = ["RegistrarService"]

log = logging.getLogger("smartswitch.registrar")

SWEEP_INTERVAL = 1.0  # seconds between expiry sweeps of the location service


class RegistrarService:
    def __init__(
        self,
        config: NodeConfig,
        authenticator: DigestAuthenticator,
        sessions: async_sessionmaker[AsyncSession],
        wall_offset: Callable[[], float],
    ) -> None:
        self.config = config
        self.wall_offset = wall_offset
        self.location = LocationService()
        self.guard = SourceGuard(
            GuardSettings(
                fail_limit=config.auth_fail_limit,
                fail_window=config.auth_fail_window,
                ban_time=config.auth_ban_time,
                rate=config.source_rate_limit,
                burst=max(config.source_rate_burst, 1.0),
            )
        )
        self.registrar = Registrar(
            self.location,
            authenticator,
            self.guard,
            RegistrarSettings(
                min_expires=config.reg_min_expires,
                max_expires=config.reg_max_expires,
                default_expires=config.reg_default_expires,
                node=config.node_id,
            ),
        )
        self.store = RegistrationStore(sessions, config.node_id)
        self.views: ConfigViews | None = None
        self.outbound: OutboundRegistrations | None = None
        # Whether this node registers with suppliers: it originates signalling (always, unless
        # calls leave from the shared IP and another node holds it).
        self.originating = True
        self._flush: Callable[[], None] = lambda: None
        self._sweep_timer: Timer | None = None

    def wall(self, loop_now: float) -> float:
        return loop_now + self.wall_offset()

    # --- life ----------------------------------------------------------------------------------

    async def start(self, views: ConfigViews, loop_now: float) -> None:
        """Take the configuration and the persisted bindings (before any SIP traffic)."""
        self.views = views
        self.registrar.update(views.subscribers)
        self._check_realms(views)
        restored = await self.store.load(self.wall(loop_now))
        for binding in restored:
            self.location.apply(binding, RESTORED)
        self.location.listeners.append(self.store.on_change)
        self.store.start()
        log.info("registrar: %d bindings restored", len(restored))

    def attach(self, sip: SipApplication, flush: Callable[[], None], loop_now: float) -> None:
        """Serve REGISTER for ``sip`` and start the outbound registrations. Called outside any
        network callback: ``flush`` sends what was queued."""
        self._flush = flush
        layer = sip.layer
        self.registrar.tag = layer.ids.next
        sip.registrations = self
        self._sweep_timer = layer.timers.schedule(
            loop_now + SWEEP_INTERVAL, self._sweep, layer.timers
        )
        self.outbound = OutboundRegistrations(layer, node=self.config.name)
        self.outbound.active = self.originating
        if self.views is not None:
            self.outbound.reconcile(self.views.snapshot.peers.values(), loop_now)
        flush()

    def update(self, views: ConfigViews, loop_now: float) -> None:
        """A new configuration version."""
        self.views = views
        self.registrar.update(views.subscribers)
        self._check_realms(views)
        if self.outbound is not None:
            self.outbound.reconcile(views.snapshot.peers.values(), loop_now)
            self._flush()

    def set_originating(self, originating: bool, loop_now: float) -> None:
        """Register with the suppliers (this node originates) or not (unregister now), e.g.
        before and after the address signalling leaves from changes."""
        self.originating = originating
        if self.outbound is not None:
            self.outbound.set_active(originating, loop_now)
            self._flush()

    def detach(self, loop_now: float) -> None:
        """At shutdown: unregister from the suppliers (best effort; the caller flushes)."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        if self.outbound is not None:
            self.outbound.stop_all(loop_now)

    async def close(self) -> None:
        await self.store.close()

    # --- SIP -----------------------------------------------------------------------------------

    def register(self, request: Request, source: Address, now: float) -> Response:
        """A REGISTER from the SIP application, at ``now`` on the loop's clock."""
        return self.registrar.handle(request, source, self.wall(now))

    def _sweep(self, now: float, timers: TimerHeap) -> None:
        self.location.expire(self.wall(now))
        self._sweep_timer = timers.schedule(now + SWEEP_INTERVAL, self._sweep, timers)

    def _check_realms(self, views: ConfigViews) -> None:
        realm = self.config.sip_realm
        stale = sorted(s.username for s in views.subscribers.values() if s.realm != realm)
        if stale:
            log.warning(
                "%d subscribers were provisioned for another realm than %r and cannot "
                "authenticate until their passwords are set again: %s",
                len(stale),
                realm,
                ", ".join(stale[:10]),
            )

    # --- state, for the HTTP API and the CLI ------------------------------------------------------

    def bindings_state(self, loop_now: float) -> list[dict[str, Any]]:
        now = self.wall(loop_now)
        out = []
        for b in sorted(self.location.bindings(), key=lambda b: (b.aor, b.contact)):
            if b.expires_at <= now:
                continue
            out.append(
                {
                    "aor": b.aor,
                    "contact": b.contact,
                    "expires_in": b.expires_in(now),
                    "source": f"{b.source.transport}:{b.source.host}:{b.source.port}",
                    "user_agent": b.user_agent,
                    "q": b.q,
                    "node": b.node,
                    "call_id": b.call_id,
                    "cseq": b.cseq,
                }
            )
        return out

    def outbound_state(self, loop_now: float) -> list[dict[str, Any]]:
        if self.outbound is None:
            return []
        return [asdict(status) for status in self.outbound.statuses(loop_now)]
