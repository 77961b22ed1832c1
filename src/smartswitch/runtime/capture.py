"""Call capture in the node: the recorder on the loop, the writer thread, HEP, retention.

The pieces are :mod:`smartswitch.capture`'s; this module connects them to the node:

- **Which calls**: the capture settings (:mod:`smartswitch.model.capture`) of each
  configuration snapshot, peer names turned into peer ids (:meth:`CaptureService.apply`).
- **Both legs**: the B2BUA tells the service of each call and each B leg
  (:class:`~smartswitch.b2bua.ports.CallObserver`); the CDR sink tells it the CDR id that
  names the file (:class:`CdrTap`); a call that ends without a CDR is discarded.
- **The wire**: the transport's tap (``SipEndpoint.tap``) hands every message, with the
  addresses it really crossed, to the recorder.  While capture is off and no call is being
  captured, the tap and the observer are unset: the call path pays one attribute test per
  message and per call.
- **Files**: ``<data_dir>/captures/<node>/yyyy/mm/dd/<CDR id>.pcap`` (the file sync's
  layout: ``<kind>/<origin>/...``), each handed to the file sync once closed.
- **Retention**: by age and total size, oldest first, over every node's captures held here
  (each node holds all of them, so each ages them alike), in a thread; a file of this node's
  that it deletes is forgotten by the file sync, so it never travels again.
- **Errors**: a full or unwritable directory puts the writer in its error state (stats,
  dashboard, /metrics); calls carry on, capturing resumes once it is writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from smartswitch.b2bua.ports import CallSession
from smartswitch.capture.recorder import CaptureMode, CapturePolicy, CaptureRecorder, CaptureStats
from smartswitch.capture.retention import Retention, sweep
from smartswitch.capture.sender import HepSender
from smartswitch.capture.writer import CaptureWriter, relative_path
from smartswitch.model.capture import CaptureSettings, capture_settings
from smartswitch.model.cdr import CdrRecord
from smartswitch.model.config import ConfigSnapshot
from smartswitch.routing.dids import DidCall
from smartswitch.routing.policy import BillingCall
from smartswitch.routing.records import CallSink
from smartswitch.routing.views import ConfigViews
from smartswitch.transport.endpoint import SipEndpoint

log = logging.getLogger("smartswitch.runtime.capture")

KIND = "captures"


def capture_path(data_dir: Path, node: str, cdr_id: str) -> Path:
    """Where the capture of the call with CDR id ``cdr_id``, handled by ``node``, is kept on
    every node.  Raises ``ValueError`` for names that could leave the directory."""
    if not node or "/" in node or node.startswith("."):
        raise ValueError(f"not a node name: {node!r}")
    return data_dir / KIND / node / relative_path(cdr_id)


def _customer(session: CallSession) -> int | None:
    if isinstance(session, BillingCall):
        return session.customer.id if session.subscriber_id is None else None
    if isinstance(session, DidCall):
        return session.delivering.id
    return None


def _supplier(session: CallSession, index: int) -> int | None:
    if isinstance(session, BillingCall):
        return session.suppliers[index].peer.id
    if isinstance(session, DidCall):
        return session.owner_peer_id or None
    return None


class CaptureService:
    """The node's call capture (see the module docstring).  Implements the B2BUA's
    ``CallObserver``."""

    def __init__(
        self,
        data_dir: Path,
        node: str,
        endpoint: SipEndpoint,
        *,
        on_written: Callable[[Path], None] | None = None,
        on_deleted: Callable[[Path], None] | None = None,
        on_retention: Callable[[float | None, float], None] | None = None,
        retention_interval: float = 300.0,
        linger: float = 4.0,
    ) -> None:
        self.root = data_dir / KIND
        self.directory = self.root / node
        self.endpoint = endpoint
        self.on_written = on_written
        self.on_deleted = on_deleted
        self.on_retention = on_retention  # (max age in seconds or None, sweep interval)
        self.retention_interval = retention_interval
        self.writer = CaptureWriter(self.directory, on_written=self._written, retention=None)
        self.recorder = CaptureRecorder(CapturePolicy(), self.writer, None, linger=linger)
        self.settings = CaptureSettings()
        self.retention = Retention()
        self.files_deleted = 0
        self._hep: HepSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._named: set[str] = set()
        self._hooked = False
        self._b2bua_hook: Callable[[CaptureService | None], None] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- life ---------------------------------------------------------------------------------

    def start(self, hook: Callable[[CaptureService | None], None]) -> None:
        """Start the writer and the housekeeping; ``hook(self)`` / ``hook(None)`` sets or
        clears the B2BUA's observer."""
        self._loop = asyncio.get_running_loop()
        self._b2bua_hook = hook
        self.writer.start()
        self._task = asyncio.create_task(self._housekeeping(), name="capture")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._unhook()
        self.recorder.close()
        await asyncio.to_thread(self.writer.stop)
        if self._hep is not None:
            self._hep.close()

    # --- configuration ------------------------------------------------------------------------

    def apply(self, snapshot: ConfigSnapshot) -> None:
        """Take the capture settings of a configuration snapshot (at start and whenever the
        configuration changes)."""
        settings = capture_settings(snapshot.settings)
        ids = {peer.name: peer.id for peer in snapshot.peers.values()}
        policy = CapturePolicy(
            CaptureMode(settings.mode),
            frozenset(ids[n] for n in settings.customers if n in ids),
            frozenset(ids[n] for n in settings.suppliers if n in ids),
        )
        if (settings.hep, settings.hep_id) != (self.settings.hep, self.settings.hep_id):
            if self._hep is not None:
                self._hep.close()
                self._hep = None
            if settings.hep is not None:
                try:  # an IP address (the setting's rule): nothing is looked up here
                    self._hep = HepSender(settings.hep[0], settings.hep[1], settings.hep_id)
                except (OSError, ValueError) as exc:
                    log.error("capture: cannot send HEP to %s: %s", settings.hep, exc)
            self.recorder.hep = self._hep
        self.settings = settings
        self.recorder.policy = policy
        self.retention = Retention.days(settings.max_age_days or None, settings.max_bytes or None)
        if policy.mode is not CaptureMode.OFF:
            self._hook()

    def views_changed(self, views: ConfigViews) -> None:
        """A configuration listener (``BillingServices.listeners``)."""
        self.apply(views.snapshot)

    def _hook(self) -> None:
        if self._hooked:
            return
        self._hooked = True
        self.endpoint.wall_offset = time.time() - self.endpoint.loop.time()
        self.endpoint.tap = self.recorder.message
        if self._b2bua_hook is not None:
            self._b2bua_hook(self)

    def _unhook(self) -> None:
        if not self._hooked:
            return
        self._hooked = False
        self.endpoint.tap = None
        if self._b2bua_hook is not None:
            self._b2bua_hook(None)

    # --- the B2BUA's observer -----------------------------------------------------------------

    def call_started(self, call_id: str, session: CallSession, now: float) -> None:
        self.recorder.start(call_id, now, customer=_customer(session))

    def leg_started(self, call_id: str, leg_call_id: str, session: CallSession, index: int) -> None:
        self.recorder.add_leg(call_id, leg_call_id, supplier=_supplier(session, index))

    def call_ended(self, call_id: str, now: float) -> None:
        if call_id in self._named:
            self._named.discard(call_id)
        else:
            self.recorder.discard(call_id)  # no CDR (a lab call): no file

    def cdr_made(self, record: CdrRecord) -> None:
        """The CDR of a call: its id names the call's file."""
        if not self._hooked:
            return
        assert self._loop is not None
        self._named.add(record.call_id)
        self.recorder.end(record.call_id, record.id, self._loop.time())

    # --- the writer thread's side -------------------------------------------------------------

    def _written(self, path: Path) -> None:
        if self.on_written is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_written, path)

    # --- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        sweep_at = loop.time()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            self.recorder.poll(now)
            if self._hooked:
                # Follows the wall clock (NTP steps) for the files' timestamps.
                self.endpoint.wall_offset = time.time() - now
                if self.recorder.policy.mode is CaptureMode.OFF and not self.recorder.calls_active:
                    self._unhook()
            if now >= sweep_at:
                sweep_at = now + self.retention_interval
                try:
                    await self.sweep()
                except Exception:
                    log.exception("capture: retention failed")

    async def sweep(self) -> list[Path]:
        """Apply the retention now to every node's captures held here."""
        deleted = await asyncio.to_thread(sweep, self.root, self.retention, time.time())
        self.files_deleted += len(deleted)
        if deleted:
            log.info("capture: retention deleted %d file(s)", len(deleted))
        if self.on_deleted is not None:
            for path in deleted:
                self.on_deleted(path)
        return deleted

    def stats(self) -> CaptureStats:
        return self.recorder.stats()

    @property
    def error(self) -> str | None:
        return self.writer.error


class CdrTap:
    """The CDR sink seen by the policy: tells the capture each CDR, then keeps it."""

    def __init__(self, inner: CallSink, capture: CaptureService) -> None:
        self.inner = inner
        self.capture = capture

    def append(self, record: CdrRecord, done: Callable[[], None] | None = None) -> None:
        self.capture.cdr_made(record)
        self.inner.append(record, done)
