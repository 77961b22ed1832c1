"""The recordings directory: a session's pcap filed under its call's name with a WAV, retention."""

from __future__ import annotations

import os
import wave
from pathlib import Path

from smartswitch.media.archive import RecordingArchive, recording_name
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
    archive = RecordingArchive(tmp_path / "spool", tmp_path / "rec", max_age=3600, max_bytes=10**9)
    _spool(tmp_path / "spool", "b-leg-1", 3.0)
    filed = archive.file("b-leg-1", "call/1@example.org", wait=0)
    assert filed is not None and filed.wav is not None
    name = recording_name("call/1@example.org")
    assert "/" not in name and filed.wav == tmp_path / "rec" / f"{name}.wav"
    assert filed.pcap == tmp_path / "rec" / f"{name}.pcap"
    with wave.open(str(filed.wav)) as reader:
        assert abs(reader.getnframes() / 8000 - 3.0) < 0.1
    assert list((tmp_path / "spool" / "pcaps").iterdir()) == []  # the spool is emptied
    assert archive.file("never-recorded", "x", wait=0) is None


def test_retention_by_age_then_size(tmp_path: Path) -> None:
    archive = RecordingArchive(tmp_path / "spool", tmp_path / "rec", max_age=100, max_bytes=2500)
    now = 1_800_000_000.0
    for name, age in (("old", 200), ("a", 50), ("b", 40), ("c", 30)):
        path = tmp_path / "rec" / f"{name}.wav"
        path.write_bytes(bytes(1000))
        os.utime(path, (now - age, now - age))
    (tmp_path / "rec" / "notes.txt").write_text("kept: not a recording")
    assert archive.prune(now) == 2  # "old" by age, then "a" (the oldest) for the size
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["b.wav", "c.wav", "notes.txt"]
