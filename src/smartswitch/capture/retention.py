"""Retention of capture files: by age and by total size, oldest first.

A file's age is its modification time: when it was written (rsync -t keeps it when a file is
copied to another node, so every node ages a capture alike).  ``sweep`` first removes what is
older than ``max_age``, then, while the rest is larger than ``max_bytes``, the oldest; then the
day directories left empty.  It returns the removed files, so the file sync knows a capture that
is gone was deleted on purpose and is not to be fetched again.

The writer thread runs it periodically (``CaptureWriter(retention=...)``), never the event loop:
walking a directory of a day's captures takes milliseconds to seconds.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Retention", "sweep"]

SUFFIX = ".pcap"


@dataclass(frozen=True, slots=True)
class Retention:
    max_age: float | None = None
    """Seconds a file is kept (days * 86400); None: no limit by age."""
    max_bytes: int | None = None
    """Total size of the files kept; None: no limit by size."""

    @classmethod
    def days(cls, days: float | None, max_bytes: int | None = None) -> Retention:
        return cls(None if days is None else days * 86_400, max_bytes)


def _files(directory: Path) -> list[tuple[float, int, str]]:
    """(mtime, size, path) of every capture file under ``directory``."""
    found: list[tuple[float, int, str]] = []
    stack = [str(directory)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    found.append((stat.st_mtime, stat.st_size, entry.path))
            except FileNotFoundError:
                continue  # removed meanwhile
    return found


def sweep(directory: Path, retention: Retention, now: float) -> list[Path]:
    """Delete what ``retention`` no longer keeps under ``directory``; ``now`` is the wall-clock
    time (seconds since the epoch).  Returns the deleted files, oldest first."""
    if retention.max_age is None and retention.max_bytes is None:
        return []
    files = sorted(_files(directory))
    total = sum(size for _, size, _ in files)
    cutoff = None if retention.max_age is None else now - retention.max_age
    deleted: list[Path] = []
    for mtime, size, path in files:
        too_old = cutoff is not None and mtime < cutoff
        too_big = retention.max_bytes is not None and total > retention.max_bytes
        if not (too_old or too_big):
            break  # sorted by age: everything after this is newer and fits
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        else:
            deleted.append(Path(path))
        total -= size
    _prune_empty(directory, {p.parent for p in deleted})
    return deleted


def _prune_empty(root: Path, directories: set[Path]) -> None:
    """Remove the now empty directories between each of ``directories`` and ``root``."""
    for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
        while directory != root and root in directory.parents:
            with contextlib.suppress(OSError):
                directory.rmdir()  # fails (and stops here) while anything is left in it
            if directory.exists():
                break
            directory = directory.parent
