"""Retention: by age and by total size, oldest first, reporting what it deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

from smartswitch.capture.retention import Retention, sweep
from smartswitch.capture.writer import CaptureWriter

from .test_writer import wait_for

NOW = 1_700_000_000.0
DAY = 86_400.0


def capture(root: Path, relative: str, size: int, age_days: float) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(size))
    mtime = NOW - age_days * DAY
    os.utime(path, (mtime, mtime))
    return path


def layout(root: Path) -> dict[str, Path]:
    return {
        "old": capture(root, "2023/10/01/OLD.pcap", 1000, 40),
        "older": capture(root, "2023/09/30/OLDER.pcap", 1000, 41),
        "week": capture(root, "2023/11/07/WEEK.pcap", 3000, 7),
        "day": capture(root, "2023/11/13/DAY.pcap", 2000, 1),
        "new": capture(root, "2023/11/14/NEW.pcap", 500, 0.01),
    }


def test_by_age(tmp_path: Path) -> None:
    files = layout(tmp_path)
    deleted = sweep(tmp_path, Retention.days(30), NOW)
    assert deleted == [files["older"], files["old"]]  # oldest first
    assert not (tmp_path / "2023/09").exists()  # emptied day and month directories go
    assert not (tmp_path / "2023/10").exists()
    assert (tmp_path / "2023/11/07/WEEK.pcap").exists()


def test_by_size_oldest_first(tmp_path: Path) -> None:
    files = layout(tmp_path)  # 7500 bytes in all
    deleted = sweep(tmp_path, Retention(max_bytes=3000), NOW)
    assert deleted == [files["older"], files["old"], files["week"]]
    assert sorted(p.name for p in tmp_path.rglob("*.pcap")) == ["DAY.pcap", "NEW.pcap"]


def test_by_age_and_size(tmp_path: Path) -> None:
    files = layout(tmp_path)
    deleted = sweep(tmp_path, Retention.days(40.5, max_bytes=5000), NOW)
    assert deleted == [files["older"], files["old"], files["week"]]


def test_within_limits_nothing_goes(tmp_path: Path) -> None:
    layout(tmp_path)
    assert sweep(tmp_path, Retention.days(365, max_bytes=10**9), NOW) == []
    assert sweep(tmp_path, Retention(), NOW) == []
    assert len(list(tmp_path.rglob("*.pcap"))) == 5


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    other = capture(tmp_path, "2023/01/01/notes.txt", 10**6, 300)
    partial = capture(tmp_path, "2023/01/01/X.pcap.tmp", 10**6, 300)
    assert sweep(tmp_path, Retention.days(1, max_bytes=0), NOW) == []
    assert other.exists() and partial.exists()


def test_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert sweep(tmp_path / "nothing-yet", Retention.days(1), NOW) == []


def test_the_writer_sweeps_periodically_and_reports(tmp_path: Path) -> None:
    reported: list[list[Path]] = []
    writer = CaptureWriter(
        tmp_path,
        retention=Retention.days(30),
        retention_interval=0.05,
        on_deleted=reported.append,
    )
    old = capture(tmp_path, "2020/01/01/A.pcap", 100, 0)
    os.utime(old, (time.time() - 31 * DAY,) * 2)
    writer.start()
    try:
        wait_for(lambda: writer.files_deleted == 1)
        # And again later, for files that aged meanwhile.
        later = capture(tmp_path, "2020/01/02/B.pcap", 100, 0)
        os.utime(later, (time.time() - 31 * DAY,) * 2)
        wait_for(lambda: writer.files_deleted == 2)
    finally:
        writer.stop()
    assert reported == [[old], [later]]
    assert not (tmp_path / "2020").exists()
