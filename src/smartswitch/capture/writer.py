"""The writer thread: one pcap file per finished call, retention, and the error state.

One thread takes finished calls from a queue, writes each call's file whole (to a temporary
name, then renamed, so a reader or the file sync never sees half a file) and reports the final
path through ``on_written``.  The event loop only puts a job on the queue.

Error state: when a file cannot be written (``ENOSPC``, a read-only or missing directory, no
permission), the writer sets ``error`` (shown on the dashboard and in /metrics) and drops what
it is given until, every ``retry_interval`` seconds, a probe file of ``probe_bytes`` can be
written and removed again; then ``error`` is cleared and capturing resumes by itself.  The
recorder starts no new capture while ``error`` is set.  Calls are never affected.

Files are named by the CDR id (:func:`relative_path`)::

    <directory>/<yyyy>/<mm>/<dd>/<CDR id>.pcap

with the date (UTC) taken from the CDR id, a ULID whose first 48 bits are its creation time in
milliseconds: any node can compute where a call's capture is from the CDR id alone, and no
directory holds more than a day of captures.  A name that is not a ULID (never a CDR id; tests,
tools) is written flat as ``<directory>/<name>.pcap``.

Callbacks (``on_written(path)``, ``on_deleted(paths)``) run in the writer thread: a consumer
living on the event loop hands them over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from smartswitch.capture.pcap import CapturedMessage, pcap_bytes
from smartswitch.capture.recorder import CaptureJob
from smartswitch.capture.retention import SUFFIX, Retention, sweep
from smartswitch.model.ids import ulid_time

__all__ = ["CaptureWriter", "relative_path"]

log = logging.getLogger("smartswitch.capture")

_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")  # 48 bits of time: at most 7 first
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_PROBE_NAME = ".capture-probe"
_STOP = object()


def relative_path(name: str) -> PurePosixPath:
    """Where the capture of the call with CDR id ``name`` lives, relative to the capture
    directory: ``yyyy/mm/dd/<name>.pcap`` for a ULID, ``<name>.pcap`` otherwise.  Raises
    ``ValueError`` for a name that could escape the directory."""
    if _ULID.fullmatch(name):
        day = ulid_time(name)
        return PurePosixPath(f"{day:%Y}", f"{day:%m}", f"{day:%d}", name + SUFFIX)
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"not a capture name: {name!r}")
    return PurePosixPath(name + SUFFIX)


class CaptureWriter:
    """Writes finished calls' pcap files in its own thread (see the module docstring).

    Implements :class:`smartswitch.capture.recorder.CaptureSink`."""

    def __init__(
        self,
        directory: Path,
        *,
        on_written: Callable[[Path], None] | None = None,
        on_deleted: Callable[[list[Path]], None] | None = None,
        retention: Retention | None = None,
        retention_interval: float = 300.0,
        retry_interval: float = 30.0,
        probe_bytes: int = 64 * 1024,
        max_queue: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.on_written = on_written
        self.on_deleted = on_deleted
        self.retention = retention
        self.retention_interval = retention_interval
        self.retry_interval = retry_interval
        self.probe_bytes = probe_bytes
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._sweep_at = 0.0
        self.error: str | None = None
        """Why files cannot be written now, or None."""
        self.error_since: float | None = None
        """Wall-clock time the error state began."""
        self.files_written = 0
        self.write_errors = 0
        self.files_deleted = 0
        self._dropped_here = 0  # counted by the writer thread
        self._dropped_at_submit = 0  # counted by the submitting (loop) thread

    # --- the loop's side ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; its first act is a probe of the directory."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def submit(self, job: CaptureJob) -> None:
        """Queue a finished call; never blocks (a full queue drops the call and counts it)."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._dropped_at_submit += len(job.messages)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    @property
    def messages_dropped(self) -> int:
        return self._dropped_here + self._dropped_at_submit

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # --- the thread's work (also callable directly, e.g. by tests) ----------------------------

    def write(self, job: CaptureJob) -> Path | None:
        """Write one call's file; returns its path, or None when it was not written (error
        state, or this write failed and put the writer in the error state).  In the error
        state, a write once ``retry_interval`` has passed probes the directory first."""
        if self.error is not None and not (self._clock() >= self._retry_at and self.probe()):
            self._dropped_here += len(job.messages)
            return None
        try:
            path = self.directory / relative_path(job.name)
        except ValueError:
            log.error("capture: %r cannot name a file; the call is not written", job.name)
            self._dropped_here += len(job.messages)
            return None
        skipped: list[CapturedMessage] = []
        data = pcap_bytes(job.captured(), skipped=skipped)
        self._dropped_here += len(skipped)
        temporary = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            self.write_errors += 1
            self._dropped_here += len(job.messages) - len(skipped)
            self._fail(exc)
            return None
        self.files_written += 1
        if self.on_written is not None:
            try:
                self.on_written(path)
            except Exception:
                log.exception("capture: on_written failed for %s", path)
        return path

    def probe(self) -> bool:
        """Whether the directory takes a file of ``probe_bytes`` now; clears or sets ``error``."""
        probe = self.directory / _PROBE_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as file:
                file.write(bytes(self.probe_bytes))
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink()
            self._fail(exc)
            return False
        if self.error is not None:
            log.warning("capture: %s is writable again, capturing resumes", self.directory)
        self.error = None
        self.error_since = None
        return True

    def sweep(self, now: float | None = None) -> list[Path]:
        """Apply the retention now (``now``: wall-clock time); returns the deleted files."""
        if self.retention is None:
            return []
        try:
            deleted = sweep(self.directory, self.retention, time.time() if now is None else now)
        except OSError as exc:
            log.warning("capture: retention sweep of %s failed: %s", self.directory, exc)
            return []
        self.files_deleted += len(deleted)
        if deleted and self.on_deleted is not None:
            try:
                self.on_deleted(deleted)
            except Exception:
                log.exception("capture: on_deleted failed")
        return deleted

    def _fail(self, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        error = f"cannot write captures to {self.directory}: {reason}"
        if self.error != error:
            log.error("capture: %s; capturing stops until it is writable", error)
        if self.error is None:
            self.error_since = time.time()
        self.error = error
        self._retry_at = self._clock() + self.retry_interval

    def _run(self) -> None:
        self.probe()
        self._sweep_at = self._clock()
        while True:
            now = self._clock()
            if self.error is not None and now >= self._retry_at:
                self.probe()
            if self.retention is not None and now >= self._sweep_at:
                self.sweep()
                self._sweep_at = now + self.retention_interval
            deadlines = [self._sweep_at] if self.retention is not None else []
            if self.error is not None:
                deadlines.append(self._retry_at)
            timeout = max(0.0, min(deadlines) - self._clock()) if deadlines else None
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            if job is _STOP:
                return
            assert isinstance(job, CaptureJob)
            try:
                self.write(job)
            except Exception:  # a bug must not end the thread: later calls still get files
                log.exception("capture: writing %s failed", job.name)
