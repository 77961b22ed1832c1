"""The B2BUA's media port (:class:`~smartswitch.b2bua.ports.MediaRelay`) on a :class:`MediaEngine`.

The B2BUA is synchronous: it hands each request a ``reply`` and goes on. Here every request is
an asyncio task on the engine; its result (the rewritten SDP or the failure) goes to ``reply``
once. The tasks are kept so a stopping node can wait for the last deletes (:meth:`drain`)
before closing the engine: a node shutting down leaves no session behind at the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from smartswitch.b2bua.ports import MediaReply
from smartswitch.media.archive import RecordingArchive
from smartswitch.media.engine import MediaEngine
from smartswitch.model.media import CallRef, MediaFailure, MediaOptions

__all__ = ["EngineRelay"]

log = logging.getLogger(__name__)


class EngineRelay:
    """:class:`~smartswitch.b2bua.ports.MediaRelay` over the weighted rtpengine pool."""

    def __init__(self, engine: MediaEngine, archive: RecordingArchive | None = None) -> None:
        self.engine = engine
        self.archive = archive
        # Told of each file filed, on the event loop (the cluster's file sync pushes it).
        self.on_filed: Callable[[Path], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def available(self) -> bool:
        return any(status.up and status.weight > 0 for status in self.engine.status())

    def offer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        self._spawn(self.engine.offer(call, sdp, options), reply)

    def answer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        self._spawn(self.engine.answer(call, sdp, options), reply)

    def delete(self, call_id: str, record_as: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._delete(call_id, record_as))
        self._keep(task)

    def instance_of(self, call_id: str) -> str | None:
        return self.engine.relay_of(call_id)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the requests still out (the deletes of a stopping node's calls), and for
        those their replies start (an offer answered after its call ended deletes it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
            await asyncio.sleep(0)  # the replies' resumed work may start new deletes

    async def _delete(self, call_id: str, record_as: str | None) -> None:
        try:
            await self.engine.delete(call_id)
        except Exception:  # never fails by contract; a bug here must not kill the loop
            log.exception("media delete of %s failed", call_id)
        archive = self.archive
        if record_as is None or archive is None:
            return
        try:
            # Off the loop: copying and decoding a long call takes a while.
            filed = await asyncio.to_thread(archive.file, call_id, record_as)
        except Exception:
            archive.failed += 1
            log.exception("recording of %s not filed", record_as)
            return
        if filed is None:
            archive.failed += 1
            log.warning("recording of %s: rtpengine wrote no pcap", record_as)
            return
        if self.on_filed is not None:
            for path in (filed.pcap, filed.wav):
                if path is not None:
                    self.on_filed(path)

    def _spawn(self, request: Awaitable[bytes], reply: MediaReply) -> None:
        task = asyncio.get_running_loop().create_task(self._run(request, reply))
        self._keep(task)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: Awaitable[bytes], reply: MediaReply) -> None:
        result: bytes | MediaFailure
        try:
            result = await request
        except MediaFailure as exc:
            result = exc
        except Exception as exc:  # an unexpected answer: the call fails, the node goes on
            log.exception("media request failed")
            result = MediaFailure(f"{type(exc).__name__}: {exc}")
        reply(result)
