"""The writer thread: files tshark reads, naming, and the error state (an unwritable, read-only
or full directory) with its recovery."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

from smartswitch.capture.pcap import CapturedMessage
from smartswitch.capture.recorder import (
    CaptureJob,
    CaptureMode,
    CapturePolicy,
    CaptureRecorder,
)
from smartswitch.capture.writer import CaptureWriter, relative_path
from smartswitch.model.ids import new_ulid, ulid_time

from .calls import A_CALL_ID, two_leg_call
from .test_pcap import expected_rows, sip_rows
from .test_recorder import play
from .tools import needs_tshark


def job(name: str, messages: list[CapturedMessage] | None = None) -> CaptureJob:
    messages = two_leg_call() if messages is None else messages
    wires = tuple((m.time, m.transport, m.src, m.dst, m.data) for m in messages)
    return CaptureJob(name, A_CALL_ID, wires)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition the writer exposes (its thread works on its own schedule)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_relative_path() -> None:
    cdr_id = new_ulid()
    day = ulid_time(cdr_id)
    assert relative_path(cdr_id) == PurePosixPath(f"{day:%Y}/{day:%m}/{day:%d}/{cdr_id}.pcap")
    assert relative_path("01ARZ3NDEKTSV4RRFFQ69G5FAV") == PurePosixPath(
        "2016/07/30/01ARZ3NDEKTSV4RRFFQ69G5FAV.pcap"  # the example ULID of the spec
    )
    assert relative_path("test-call_1.a") == PurePosixPath("test-call_1.a.pcap")
    for bad in ("../etc/passwd", ".hidden", "a/b", "", "x" * 101, "a b"):
        with pytest.raises(ValueError):
            relative_path(bad)


@needs_tshark
def test_the_threads_file_holds_both_legs(tmp_path: Path) -> None:
    written: list[Path] = []
    writer = CaptureWriter(tmp_path, on_written=written.append)
    writer.start()
    try:
        recorder = CaptureRecorder(CapturePolicy(CaptureMode.ALL), writer, linger=0)
        cdr_id = new_ulid()
        play(recorder, name=cdr_id)
        wait_for(lambda: writer.files_written == 1)
    finally:
        writer.stop()
    assert written == [tmp_path / relative_path(cdr_id)]
    rows = sip_rows(written[0])
    assert rows == expected_rows(False)
    assert [p.name for p in tmp_path.rglob("*")] == [
        *(str(part) for part in relative_path(cdr_id).parts)
    ]  # no temporary or probe file left behind
    stats = recorder.stats()
    assert (stats.files_written, stats.write_errors, stats.error) == (1, 0, None)


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    writer.start()
    for index in range(20):
        writer.submit(job(f"call{index}"))
    writer.stop()
    assert writer.files_written == 20
    assert len(list(tmp_path.glob("call*.pcap"))) == 20


def test_a_full_queue_drops_calls_not_the_loop(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, max_queue=2)  # not started: nothing is taken off
    for index in range(5):
        writer.submit(job(f"call{index}"))
    assert writer.queued == 2
    assert writer.messages_dropped == 3 * 14


def test_unwritable_directory_sets_the_error_and_recovers(tmp_path: Path) -> None:
    blocked = tmp_path / "captures"
    blocked.write_text("a file where the directory should be")
    writer = CaptureWriter(blocked)
    assert writer.write(job("a")) is None
    assert writer.error is not None and str(blocked) in writer.error
    assert (writer.write_errors, writer.messages_dropped) == (1, 14)
    assert writer.error_since is not None
    # While in error nothing is attempted; the recorder starts no new capture.
    assert writer.write(job("b")) is None
    assert (writer.write_errors, writer.messages_dropped) == (1, 28)
    recorder = CaptureRecorder(CapturePolicy(CaptureMode.ALL), writer)
    assert recorder.start("new-call", 0.0) is False
    assert recorder.stats().calls_skipped == 1
    assert writer.probe() is False
    # The directory becomes usable: the probe clears the error.
    blocked.unlink()
    assert writer.probe() is True
    assert writer.error is None and writer.error_since is None
    assert writer.write(job("c")) == blocked / "c.pcap"
    assert recorder.start("new-call", 0.0) is True


def test_the_thread_retries_by_itself(tmp_path: Path) -> None:
    blocked = tmp_path / "captures"
    blocked.write_text("in the way")
    writer = CaptureWriter(blocked, retry_interval=0.05)
    writer.start()
    try:
        wait_for(lambda: writer.error is not None)  # the start-up probe found it
        blocked.unlink()
        wait_for(lambda: writer.error is None)
        writer.submit(job("after"))
        wait_for(lambda: writer.files_written == 1)
    finally:
        writer.stop()
    assert (blocked / "after.pcap").exists()


def test_the_retry_waits_for_its_interval(tmp_path: Path) -> None:
    now = [0.0]
    blocked = tmp_path / "captures"
    blocked.write_text("in the way")
    writer = CaptureWriter(blocked, retry_interval=30.0, clock=lambda: now[0])
    writer.start()
    try:
        wait_for(lambda: writer.error is not None)
        blocked.unlink()
        # Prod the thread with jobs: it drops them and does not probe before 30 s.
        writer.submit(job("early"))
        wait_for(lambda: writer.messages_dropped == 14)
        assert writer.error is not None
        now[0] = 30.0
        writer.submit(job("on-time"))
        wait_for(lambda: writer.files_written == 1)
    finally:
        writer.stop()
    assert writer.error is None
    assert [p.name for p in blocked.iterdir()] == ["on-time.pcap"]


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only), unmounted afterwards whatever happens."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root")
def test_a_read_only_directory(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        writer = CaptureWriter(mount)
        assert writer.write(job("a")) is None
        assert writer.error is not None and "Read-only file system" in writer.error
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)
        assert writer.probe() is True
        assert writer.write(job("b")) == mount / "b.pcap"


@pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root")
def test_a_full_directory(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as mount:
        # About 28 KiB a call: two fit in 64 KiB, the third does not.
        writer = CaptureWriter(mount, probe_bytes=16 * 1024)
        big = [
            CapturedMessage(m.time, m.transport, m.src, m.dst, m.data + b"x" * 1500)
            for m in two_leg_call()
        ]
        written = []
        for index in range(10):
            path = writer.write(job(f"call{index}", big))
            if path is None:
                break
            written.append(path)
        assert writer.error is not None and "No space left on device" in writer.error
        assert writer.write_errors == 1
        assert len(written) == 2
        # The failed file left nothing behind: only whole files are there.
        assert sorted(mount.iterdir()) == sorted(written)
        assert writer.probe() is False
        # Space comes back (retention, an operator): the probe clears the error.
        for path in written:
            path.unlink()
        assert writer.probe() is True
        assert writer.write(job("after")) == mount / "after.pcap"


def test_a_name_that_cannot_be_a_file_is_dropped_not_an_error(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path)
    assert writer.write(job("../escape")) is None
    assert (writer.error, writer.messages_dropped, writer.write_errors) == (None, 14, 0)
    assert list(tmp_path.iterdir()) == []


def test_a_callback_failure_does_not_stop_the_thread(tmp_path: Path) -> None:
    def broken(path: Path) -> None:
        raise RuntimeError("the file sync is down")

    writer = CaptureWriter(tmp_path, on_written=broken)
    writer.start()
    try:
        writer.submit(job("one"))
        writer.submit(job("two"))
        wait_for(lambda: writer.files_written == 2)
    finally:
        writer.stop()
