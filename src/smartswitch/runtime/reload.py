"""Configuration reloads off the event loop, and off its interpreter lock.

A carrier's rate deck is hundreds of thousands of rows: reading it takes seconds of CPU. On
the event loop those would be seconds without signalling; in a thread they would still hold
the interpreter lock the loop needs (measured with bench/reload.py: a thread stretched the
reload of a 500 000-rate deck to 20 s under 200 calls/s and doubled the slowest answers). So
:class:`ConfigLoader` reads in a **process** of its own (:mod:`smartswitch.runtime.reader`,
started once, with its own blocking engine), which sends back the configuration without the
rates of the tariffs whose digest the node already has. A thread of the node assembles the
snapshot (:func:`~smartswitch.store.snapshot.assemble`: unchanged tariffs are the objects in
use) and its :class:`~smartswitch.routing.views.ConfigViews` (unchanged tariffs keep their
index); the loop only swaps the result in.

So a change to one rate costs the node a few small messages, whatever the size of the deck.
A tariff that did change comes over in chunks and is indexed in the node's thread; while that
runs, the interpreter's switch interval is lowered from 5 ms to :data:`SWITCH_INTERVAL`, so
that the loop thread, wanting the lock back after each network wait, gets it within that time.
The first load (at start, before any SIP) also runs with the garbage collector off, so that it
does not visit the half-million objects again and again as they are made; the node freezes
them once started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import smartswitch
from smartswitch.routing.views import ConfigViews
from smartswitch.runtime.reader import CHUNK
from smartswitch.store.snapshot import RateLine, SnapshotParts, TariffHead, assemble

#: The interpreter's switch interval while the node's thread assembles (its default is 5 ms).
SWITCH_INTERVAL = 0.0005


class ReaderError(RuntimeError):
    """The reader process failed to read (the database is away, say) or stopped."""


class ConfigLoader:
    """Reads the configuration of the database at ``url`` in a reader process and indexes it
    in a thread, one load at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config-load")
        self._reader: _Reader | None = None
        self._last: ConfigViews | None = None
        self._digests: dict[int, bytes] = {}  # the tariffs of _last, by id

    async def load(self, previous: ConfigViews | None = None) -> ConfigViews:
        """The configuration in the database now, indexed; what is unchanged since
        ``previous`` (the views this loader built last) is shared with it. Raises ValueError
        for a configuration that cannot be indexed, :class:`ReaderError` when it cannot be
        read (the caller keeps what it has)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._load, previous)

    def _load(self, previous: ConfigViews | None) -> ConfigViews:
        if previous is None or previous is not self._last:
            previous, known = None, {}
        else:
            known = self._digests
        if self._reader is None or not self._reader.running:
            self._reader = _Reader(self.url)
        reader = self._reader
        try:
            parts = reader.read(known)
            with (
                _switch_interval(SWITCH_INTERVAL),
                _no_collection() if previous is None else contextlib.nullcontext(),
            ):
                snapshot = assemble(
                    parts, reader.lines, previous.snapshot if previous else None, known
                )
                reader.done()
                views = ConfigViews.build(snapshot, previous)
        except BaseException:
            if reader.streaming:  # stopped half-way: what is left of the answer is lost
                reader.stop()
            raise
        self._last = views
        self._digests = {head.id: head.digest for head in parts.tariffs}
        return views

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._reader is not None:
            self._reader.stop()


class _Reader:
    """The reader process, seen from the node (:mod:`smartswitch.runtime.reader`)."""

    def __init__(self, url: str) -> None:
        # Where this smartswitch is, so that the reader imports the same code.
        root = str(Path(smartswitch.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        requests_in, requests_out = os.pipe()
        answers_in, answers_out = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "smartswitch.runtime.reader"],
            stdin=requests_in,
            stdout=answers_out,
            env={**os.environ, "PYTHONPATH": path},
        )
        os.close(requests_in)
        os.close(answers_out)
        self._requests = Connection(requests_out, readable=False)
        self._answers = Connection(answers_in, writable=False)
        self.streaming = False  # between read() and done()
        self._send(url)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def read(self, known: dict[int, bytes]) -> SnapshotParts:
        """The snapshot's parts; then :meth:`lines` for each tariff not in ``known`` (in the
        order of the parts), then :meth:`done`."""
        self._send(known)
        self.streaming = True
        parts: SnapshotParts = self._receive("parts")[0]
        return parts

    def lines(self, head: TariffHead) -> Iterator[RateLine]:
        for _ in range(0, head.lines, CHUNK):
            tariff_id, lines = self._receive("lines")
            assert tariff_id == head.id, (tariff_id, head.id)
            yield from lines

    def done(self) -> None:
        self._receive("done")
        self.streaming = False

    def _send(self, message: object) -> None:
        try:
            self._requests.send(message)
        except OSError as exc:
            self.stop()
            raise ReaderError(f"the configuration reader stopped ({exc!r})") from None

    def _receive(self, kind: str) -> tuple[Any, ...]:
        try:
            message = self._answers.recv()
        except (EOFError, OSError) as exc:
            self.stop()
            raise ReaderError(f"the configuration reader stopped ({exc!r})") from None
        if message[0] == "error":
            self.streaming = False
            raise ReaderError(message[1])
        if message[0] != kind:
            self.stop()
            raise ReaderError(f"the configuration reader sent {message[0]!r}, not {kind!r}")
        return tuple(message[1:])

    def stop(self) -> None:
        """End of input: the reader ends; killed if it has not within 5 s."""
        self._requests.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._answers.close()


@contextlib.contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
