"""The recordings directory: a session's pcap filed under its call's name with a WAV, in this
node's folder (the file sync's layout); found in any node's folder; retention over all."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import pytest

from smartswitch.media.archive import RecordingArchive, find_recording, recording_name
from smartswitch.media.recording import recording_prefix

from .rtpengine import rtp, tone
from .test_recording import ipv4_udp, pcap

CALLER = ("127.0.77.41", 16000)
CALLEE = ("127.0.77.42", 16002)
RELAY_A = ("127.0.77.40", 30000)  # where the caller sends
RELAY_B = ("127.0.77.40", 30002)  # where the callee sends


def _spool(spool: Path, session: str, seconds: float) -> None:
    """A pcap as rtpengine leaves it for ``session``, ``seconds`` of G.711 from each side."""
    records = []
    for n in range(int(seconds * 50)):
        t = 1_700_000_000 + n * 0.02
        records.append((t, ipv4_udp(CALLER, RELAY_A, rtp(8, n, n * 160, 1, tone(440, 8, n)))))
        records.append(
            (t + 0.001, ipv4_udp(CALLEE, RELAY_B, rtp(0, n, n * 160, 2, tone(1000, 0, n))))
        )
    stem = f"{recording_prefix(session)}-0123456789abcdef"
    (spool / "pcaps").mkdir(parents=True, exist_ok=True)
    (spool / "metadata").mkdir(parents=True, exist_ok=True)
    (spool / "pcaps" / f"{stem}.pcap").write_bytes(pcap(records))
    (spool / "metadata" / f"rtpengine-meta-{stem}.txt").write_text("\n")


def test_a_session_is_filed_under_its_calls_name(tmp_path: Path) -> None:
    archive = RecordingArchive(
        tmp_path / "spool", tmp_path / "rec", "node1", max_age=3600, max_bytes=10**9
    )
    _spool(tmp_path / "spool", "b-leg-1", 3.0)
    filed = archive.file("b-leg-1", "call/1@example.org", wait=0)
    assert filed is not None and filed.wav is not None
    name = recording_name("call/1@example.org")
    assert "/" not in name and filed.wav == tmp_path / "rec" / "node1" / f"{name}.wav"
    assert filed.pcap == tmp_path / "rec" / "node1" / f"{name}.pcap"
    # Nothing but the two files: no temporary left for the file sync to push.
    assert sorted(p.name for p in (tmp_path / "rec" / "node1").iterdir()) == sorted(
        [f"{name}.pcap", f"{name}.wav"]
    )
    assert find_recording(tmp_path / "rec", "call/1@example.org", ".wav") == filed.wav
    with wave.open(str(filed.wav)) as reader:
        assert abs(reader.getnframes() / 8000 - 3.0) < 0.1
    assert list((tmp_path / "spool" / "pcaps").iterdir()) == []  # the spool is emptied
    assert archive.file("never-recorded", "x", wait=0) is None


def test_a_recording_is_found_in_any_nodes_folder_and_nowhere_else(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    assert find_recording(root, "x@y", ".wav") is None  # no recordings at all yet
    (root / "node2").mkdir(parents=True)
    synced = root / "node2" / f"{recording_name('x@y')}.wav"
    synced.write_bytes(b"RIFF")
    (root / "older.wav").write_bytes(b"RIFF")  # filed before the per-node folders
    assert find_recording(root, "x@y", ".wav") == synced
    assert find_recording(root, "older", ".wav") == root / "older.wav"
    assert find_recording(root, "x@y", ".pcap") is None
    assert find_recording(root, "../node2/x@y", ".wav") is None  # "/" escaped: no way out
    with pytest.raises(ValueError):
        RecordingArchive(tmp_path / "spool", root, "../elsewhere", max_age=1, max_bytes=1)


def test_retention_by_age_then_size_over_every_nodes_recordings(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    archive = RecordingArchive(tmp_path / "spool", root, "node1", max_age=100, max_bytes=2500)
    (root / "node2").mkdir()
    now = 1_800_000_000.0
    for name, age in (("node2/old", 200), ("node1/a", 50), ("b", 40), ("node2/c", 30)):
        path = root / f"{name}.wav"
        path.write_bytes(bytes(1000))
        os.utime(path, (now - age, now - age))
    (root / "node1" / "notes.txt").write_text("kept: not a recording")
    # "old" by age (a copy of node2's), then "a" (the oldest) for the size
    assert archive.prune(now) == [root / "node2" / "old.wav", root / "node1" / "a.wav"]
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert left == ["b.wav", "node1/notes.txt", "node2/c.wav"]
