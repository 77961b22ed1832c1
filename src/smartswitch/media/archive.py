"""The node's recordings directory: one pcap and one WAV per recorded call, named by its Call-ID.

rtpengine writes a relayed session's pcap into its spool (``--recording-dir``), named by the
session's id (the B leg's Call-ID here: a route advance is a new session) and closes it when the
session is deleted. :meth:`RecordingArchive.file` then moves it to
``<recordings>/<this node>/<call>.pcap`` and decodes ``<call>.wav`` beside it (G.711; for the
browser), ``<call>`` being the caller's Call-ID as
:func:`~smartswitch.media.recording.recording_prefix` escapes it (no "/" can reach the file
system). The CDR of the call has that Call-ID: that is the link; the web UI finds the files by it
in any node's folder (:func:`find_recording`).

The folder per origin node is the cluster's file-sync layout (``<kind>/<origin>/...``, as for
captures): the file sync pushes each node's own folder to every other node, so any node's UI
plays any node's recordings. This module does not know about the sync: whoever files or
deletes a recording tells it (the paths :meth:`RecordingArchive.file` and
:meth:`~RecordingArchive.prune` return).

Retention (:meth:`prune`), on every node over every origin's files (each node holds copies of
the others'): files older than ``max_age`` seconds go, then the oldest until the recordings
hold at most ``max_bytes``.
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

__all__ = ["SUFFIXES", "Filed", "RecordingArchive", "find_recording", "recording_name"]

SUFFIXES = (".pcap", ".wav")

log = logging.getLogger(__name__)


def recording_name(call_id: str) -> str:
    """The file name (without suffix) of a call's recording."""
    return recording_prefix(call_id)


def find_recording(root: Path, call_id: str, suffix: str) -> Path | None:
    """The call's recording file (``suffix`` ".wav" or ".pcap") under the recordings ``root``:
    in the folder of the node that recorded it (here, or synced from there), or at the top
    (where recordings were filed before the per-node folders)."""
    name = f"{recording_name(call_id)}{suffix}"
    try:
        origins = sorted(Path(e.path) for e in os.scandir(root) if e.is_dir())
    except FileNotFoundError:
        return None
    for folder in (root, *origins):
        path = folder / name
        if path.is_file():
            return path
    return None


@dataclass(frozen=True, slots=True)
class Filed:
    pcap: Path
    wav: Path | None  # None: no G.711 audio in it (the pcap is kept all the same)
    seconds: float


class RecordingArchive:
    """``spool``: rtpengine's ``--recording-dir``; ``root``: the recordings, one folder per
    origin node; ``origin``: this node's name (the folder it files into)."""

    def __init__(
        self, spool: Path, root: Path, origin: str, *, max_age: float, max_bytes: int
    ) -> None:
        if not origin or "/" in origin or origin.startswith("."):
            raise ValueError(f"bad origin node name {origin!r}")
        self.spool = spool
        self.root = root
        self.directory = root / origin
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.filed = 0
        self.failed = 0
        self.directory.mkdir(parents=True, exist_ok=True)

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
        # Dot-names while written: the file sync never takes a dot-name for a finished file.
        tmp = self.directory / f".{name}.pcap.part"
        shutil.copyfile(recording.pcap, tmp)
        os.replace(tmp, pcap)
        filed: Filed
        try:
            part = self.directory / f".{name}.wav.part"
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

    def prune(self, now: float | None = None) -> list[Path]:
        """Apply the retention to every origin's recordings; returns the files that went."""
        now = time.time() if now is None else now
        files = []
        folders = [self.root, *(Path(e.path) for e in os.scandir(self.root) if e.is_dir())]
        for folder in folders:
            for entry in os.scandir(folder):
                path = Path(entry.path)
                if entry.is_file() and path.suffix in SUFFIXES:
                    stat = entry.stat()
                    files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        removed = []
        total = sum(size for _, size, _ in files)
        for mtime, size, path in files:
            if now - mtime > self.max_age or total > self.max_bytes:
                path.unlink(missing_ok=True)
                total -= size
                removed.append(path)
        return removed
