"""Configuration reloads off the event loop.

A carrier's rate deck is hundreds of thousands of rows: reading it and indexing it takes
seconds of CPU, and on the event loop those seconds would be seconds without signalling (every
call in progress unanswered, retransmissions, lost calls). :class:`ConfigLoader` reads the
snapshot (:func:`~smartswitch.store.snapshot.read_snapshot`, through a blocking engine of its
own) and builds its :class:`~smartswitch.routing.views.ConfigViews` in one worker thread; the
loop only swaps the finished views in.

Two things keep the loop responsive while the thread works, both measured with
bench/reload.py:

- the thread shares with the previous views whatever did not change (an unchanged tariff and
  its index are the same objects), so a reload leaves few new objects behind: a full garbage
  collection over a new deck would pause every thread for some 100 ms;
- while it loads, the interpreter's switch interval is lowered from 5 ms to
  :data:`SWITCH_INTERVAL`: the loop thread, wanting the GIL back after each network wait, gets
  it within that time instead of waiting up to 5 ms behind the loader at every callback; and
  the garbage collector is off, so that it does not visit the objects being made again and
  again while they are made.

What remains is the case where much is new: a whole deck replaced is half a million new
objects, which the collector visits once or twice in the following minutes (some 100-200 ms,
all threads stopped). :func:`gc.freeze` would spare that, but would also keep forever any
garbage cycle alive at that moment (the calls in progress), so it is done only at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import sessionmaker

from smartswitch.routing.views import ConfigViews
from smartswitch.store.database import create_sync_engine
from smartswitch.store.snapshot import read_snapshot

#: The interpreter's switch interval while a load runs (its default is 5 ms).
SWITCH_INTERVAL = 0.0005


class ConfigLoader:
    """Reads and indexes the configuration of the database at ``url``, one load at a time, in
    a thread of its own."""

    def __init__(self, url: str) -> None:
        self.engine = create_sync_engine(url)
        self._sessions = sessionmaker(self.engine)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config-load")

    async def load(self, previous: ConfigViews | None = None) -> ConfigViews:
        """The configuration in the database now, indexed; what is unchanged since
        ``previous`` is shared with it. Raises ValueError for a configuration that cannot be
        indexed (the caller keeps what it has)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._load, previous)

    def _load(self, previous: ConfigViews | None) -> ConfigViews:
        with _switch_interval(SWITCH_INTERVAL), _no_collection():
            with self._sessions() as session, session.begin():
                snapshot = read_snapshot(session, previous.snapshot if previous else None)
            return ConfigViews.build(snapshot, previous)

    def close(self) -> None:
        # The connections were made in the loader's thread: close them there.
        with contextlib.suppress(RuntimeError):  # already shut down
            self._executor.submit(self.engine.dispose).result()
        self._executor.shutdown(wait=True)


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
    """No garbage collection while a load allocates: each full collection would visit every
    object made so far (about 200 ms a time for a new deck), stopping every thread."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
