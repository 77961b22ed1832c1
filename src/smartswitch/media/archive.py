"""The node's recordings directory: one pcap and one WAV per recorded call, named by its Call-ID.

rtpengine writes a relayed session's pcap into its spool (``--recording-dir``), named by the
session's id (the B leg's Call-ID here: a route advance is a new session) and closes it when the
session is deleted. :meth:`RecordingArchive.file` then moves it to
``<recordings>/<call>.pcap`` and decodes ``<call>.wav`` beside it (G.711; for the browser),
``<call>`` being the caller's Call-ID as :func:`~smartswitch.media.recording.recording_prefix`
escapes it (no "/" can reach the file system). The CDR of the call has that Call-ID: that is
the link; the web UI finds the files by it. The cluster's file sync carries the directory to
the other nodes; nothing here knows about it.

Retention (:meth:`prune`): files older than ``max_age`` seconds go, then the oldest until the
directory holds at most ``max_bytes``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from smartswitch.media.recording import (
    RecordingError,
    find_recordings,
    pcap_to_wav,
    recording_prefix,
)

__all__ = ["Filed", "RecordingArchive", "recording_name"]

log = logging.getLogger(__name__)


def recording_name(call_id: str) -> str:
    """The file name (without suffix) of a call's recording."""
    return recording_prefix(call_id)


@dataclass(frozen=True, slots=True)
class Filed:
    pcap: Path
    wav: Path | None  # None: no G.711 audio in it (the pcap is kept all the same)
    seconds: float


class RecordingArchive:
    def __init__(self, spool: Path, directory: Path, *, max_age: float, max_bytes: int) -> None:
        self.spool = spool
        self.directory = directory
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.filed = 0
        self.failed = 0
        directory.mkdir(parents=True, exist_ok=True)

    def file(self, session_id: str, call_id: str, wait: float = 2.0) -> Filed | None:
        """Move the session's recording in as the call's; None if rtpengine wrote none.

        Blocking (file copies, decoding): run it in a thread."""
        deadline = time.monotonic() + wait
        while True:
            found = find_recordings(self.spool, session_id)
            # The metadata is written when rtpengine removes the call: then the pcap is closed.
            if found and all(r.metadata is not None for r in found):
                break
            if time.monotonic() > deadline:
                if not found:
                    return None
                break
            time.sleep(0.05)
        name = recording_name(call_id)
        recording = found[-1]
        pcap = self.directory / f"{name}.pcap"
        wav = self.directory / f"{name}.wav"
        tmp = pcap.with_suffix(".pcap.part")
        shutil.copyfile(recording.pcap, tmp)
        os.replace(tmp, pcap)
        filed: Filed
        try:
            part = wav.with_suffix(".wav.part")
            info = pcap_to_wav(pcap, part, metadata=recording.metadata)
            os.replace(part, wav)
            filed = Filed(pcap, wav, info.duration)
        except RecordingError as exc:
            log.info("recording of %s: no WAV: %s", call_id, exc)
            filed = Filed(pcap, None, 0.0)
        for item in found:
            item.pcap.unlink(missing_ok=True)
            if item.metadata is not None:
                item.metadata.unlink(missing_ok=True)
        self.filed += 1
        return filed

    def prune(self, now: float | None = None) -> int:
        """Apply the retention; returns how many files went."""
        now = time.time() if now is None else now
        files = []
        for path in self.directory.iterdir():
            if path.is_file() and path.suffix in (".pcap", ".wav"):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        removed = 0
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if now - mtime > self.max_age or total > self.max_bytes:
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
        return removed
