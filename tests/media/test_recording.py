"""Recordings: G.711 decoding, pcap reading, RTP ordering, and a real call recorded by rtpengine
(on 127.0.77.4) turned into a WAV whose left channel is the caller and right the callee."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import socket
import struct
import time
import warnings
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartswitch.media.ng import NgClient
from smartswitch.media.recording import (
    ALAW,
    ULAW,
    RecordingError,
    find_recordings,
    pcap_to_wav,
    recording_prefix,
    rtp_packets,
    sides_from_metadata,
)
from smartswitch.model.media import CallRef, MediaOptions
from smartswitch.sip.sdp import SessionDescription

from .rtpengine import NG_PORT, Rtpengine, rtp, sdp, start_rtpengine, tone

IP = "127.0.77.4"
CALLER = ("127.0.77.31", 16020)
CALLEE = ("127.0.77.32", 16022)

# --------------------------------------------------------------------------------------------
# Helpers: pcap files written the way rtpengine writes them (raw IP), and WAV analysis


def ipv4_udp(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,  # don't fragment
        64,
        17,
        0,
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    return header + udp


def ipv6_udp(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(udp),
        17,
        64,
        socket.inet_pton(socket.AF_INET6, source[0]),
        socket.inet_pton(socket.AF_INET6, destination[0]),
    )
    return header + udp


def pcap(
    records: list[tuple[float, bytes]], linktype: int = 101, order: str = "<", nano: bool = False
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for time_, frame in records:
        seconds = int(time_)
        fraction = round((time_ - seconds) * (1e9 if nano else 1e6))
        out.append(struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame)
    return b"".join(out)


def channels(path: Path) -> tuple[int, list[array[int]]]:
    with wave.open(str(path), "rb") as reader:
        assert reader.getsampwidth() == 2 and reader.getframerate() == 8000
        count = reader.getnchannels()
        samples = array("h", reader.readframes(reader.getnframes()))
    return count, [samples[i::count] for i in range(count)]


def rms(samples: array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def frequency(samples: array[int]) -> float:
    """From the zero crossings of a tone (good enough to tell 440 Hz from 1 kHz)."""
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / 8000)


# --------------------------------------------------------------------------------------------
# G.711


def test_g711_tables_match_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    every_byte = bytes(range(256))
    assert list(array("h", audioop.ulaw2lin(every_byte, 2))) == list(ULAW)
    assert list(array("h", audioop.alaw2lin(every_byte, 2))) == list(ALAW)


def test_g711_landmarks() -> None:
    assert ULAW[0xFF] == 0 and ULAW[0x7F] == 0  # the two zeros of µ-law
    assert ULAW[0x00] == -32124 and ULAW[0x80] == 32124
    assert ALAW[0xD5] == 8 and ALAW[0x55] == -8  # A-law has no zero
    assert ALAW[0xAA] == 32256 and ALAW[0x2A] == -32256


# --------------------------------------------------------------------------------------------
# Finding files


def test_recording_prefix_is_glib_uri_escaping() -> None:
    assert recording_prefix("x1@host") == "x1%40host"
    assert recording_prefix("a-b.c_d~e") == "a-b.c_d~e"
    assert recording_prefix("a/b c:5060") == "a%2Fb%20c%3A5060"
    assert recording_prefix("é") == "%C3%A9"


METADATA = """/rec/pcaps/call2-4b37ca786f50b6e4.pcap


Timestamp started ms: 1796163786371.302
SDP mode: offer
SDP before RTP packet: 1

v=0
o=user1 53655765 2353687637 IN IP4 127.0.77.1
s=-
c=IN IP4 127.0.77.1
t=0 0
m=audio 30520 RTP/AVP 0 8 101
a=rtcp:30521

Timestamp started ms: 1796163786371.307
SDP mode: answer
SDP before RTP packet: 1

v=0
o=user1 53655765 2353687637 IN IP4 127.0.77.1
s=-
c=IN IP4 127.0.77.1
t=0 0
m=audio 30530 RTP/AVP 0 101
a=rtcp:30531

Timestamp terminated ms(first monologue): 1796163787509.239

call start time: 2026-12-01T22:23:06
call end time: 2026-12-01T22:23:07
"""


def test_sides_from_metadata() -> None:
    # The answer went to the caller: the caller sends to 30530; the callee to 30520.
    assert sides_from_metadata(METADATA) == (30530, 30520)
    assert sides_from_metadata("nothing") == (None, None)


def test_find_recordings(tmp_path: Path) -> None:
    (tmp_path / "pcaps").mkdir()
    (tmp_path / "metadata").mkdir()
    first = tmp_path / "pcaps" / "x1%40host-0123456789abcdef.pcap"
    second = tmp_path / "pcaps" / "x1%40host-fedcba9876543210.pcap"
    other = tmp_path / "pcaps" / "x1%40host-2-0123456789abcdef.pcap"  # call "x1@host-2"
    for path in (first, second, other):
        path.write_bytes(b"")
    os.utime(first, (1, 1))
    (tmp_path / "metadata" / "rtpengine-meta-x1%40host-0123456789abcdef.txt").write_text("m")
    found = find_recordings(tmp_path, "x1@host")
    assert [r.pcap for r in found] == [first, second]
    assert found[0].metadata is not None and found[0].metadata.name.endswith("abcdef.txt")
    assert found[1].metadata is None  # the call is not deleted yet
    assert find_recordings(tmp_path, "nobody") == []


# --------------------------------------------------------------------------------------------
# Reading pcaps and ordering RTP

A = ("127.0.77.31", 16020)
B = ("127.0.77.32", 16022)
RELAY_FOR_A = ("127.0.77.4", 30530)  # where the caller sends (the port in the answer)
RELAY_FOR_B = ("127.0.77.4", 30520)


def tone_packets(
    source: tuple[str, int],
    destination: tuple[str, int],
    hz: float,
    pt: int,
    count: int,
    start: float,
    sequence: int = 0,
    timestamp: int = 0,
    ssrc: int = 1,
) -> list[tuple[float, bytes]]:
    return [
        (
            start + 0.02 * i,
            ipv4_udp(
                source,
                destination,
                rtp(pt, sequence + i, (timestamp + 160 * i) & 0xFFFFFFFF, ssrc, tone(hz, pt, i)),
            ),
        )
        for i in range(count)
    ]


def test_streams_are_ordered_gaps_filled_and_placed(tmp_path: Path) -> None:
    caller = tone_packets(A, RELAY_FOR_A, 440, 0, 50, 1000.0)
    del caller[10]  # a lost packet: 20 ms of silence at 200 ms
    caller.insert(20, caller[19])  # a duplicate
    caller[30], caller[31] = caller[31], caller[30]  # reordered on the way
    # The callee starts half a second later, its sequence and timestamp wrapping around.
    callee = tone_packets(
        B, RELAY_FOR_B, 1000, 8, 25, 1000.5, sequence=65530, timestamp=0xFFFFFF00, ssrc=2
    )
    noise = [
        (1000.1, ipv4_udp(A, RELAY_FOR_A, rtp(101, 900, 0, 1, b"\x01\x00\x00\xa0"))),  # DTMF
        (1000.2, ipv4_udp(A, RELAY_FOR_A, bytes([0x80, 200]) + bytes(26))),  # RTCP SR
        (1000.3, ipv4_udp(A, RELAY_FOR_A, b"STUN or junk")),
    ]
    records = sorted(caller + callee + noise, key=lambda record: record[0])
    path = tmp_path / "call.pcap"
    path.write_bytes(pcap(records))
    meta = tmp_path / "meta.txt"
    meta.write_text(METADATA)

    info = pcap_to_wav(path, tmp_path / "call.wav", metadata=meta)
    assert info.channels == 2
    assert info.duration == pytest.approx(1.0, abs=0.001)  # 50 x 20 ms; the callee ends at 1.0 s
    assert [(s.channel, s.packets, s.payload_types, s.start) for s in info.streams] == [
        ("caller", 51, (0, 101), 0.0),
        ("callee", 25, (8,), 0.5),
    ]
    count, (left, right) = channels(tmp_path / "call.wav")
    assert count == 2 and len(left) == 8000
    assert rms(left[1600:1760]) == 0  # the lost packet
    assert rms(left[1440:1600]) > 3000 and rms(left[1760:1920]) > 3000
    assert frequency(left[:1600]) == pytest.approx(440, rel=0.05)
    assert rms(right[:4000]) == 0  # the callee had not started
    assert frequency(right[4000:]) == pytest.approx(1000, rel=0.05)
    # continuous across the wraps: no gap anywhere in the callee's half second
    assert min(rms(right[i : i + 160]) for i in range(4000, 8000, 160)) > 3000


def test_without_metadata_the_first_heard_is_the_caller_and_mono_mixes(tmp_path: Path) -> None:
    records = tone_packets(B, RELAY_FOR_B, 1000, 8, 10, 5.0, ssrc=2) + tone_packets(
        A, RELAY_FOR_A, 440, 0, 10, 5.1
    )
    path = tmp_path / "call.pcap"
    path.write_bytes(pcap(records))
    info = pcap_to_wav(path, tmp_path / "stereo.wav")
    assert [(s.source, s.channel) for s in info.streams] == [(B, "caller"), (A, "callee")]
    mono = pcap_to_wav(path, tmp_path / "mono.wav", stereo=False)
    count, (mixed,) = channels(tmp_path / "mono.wav")
    assert count == 1 and mono.channels == 1 and len(mixed) == 1600 + 800
    assert {s.channel for s in mono.streams} == {"mixed"}
    assert rms(mixed[800:1600]) > rms(mixed[:800])  # both tones at once there


@pytest.mark.parametrize(
    ("linktype", "order", "nano", "wrap"),
    [
        (101, ">", False, lambda ip: ip),  # big-endian file
        (228, "<", True, lambda ip: ip),  # nanosecond timestamps, LINKTYPE_IPV4
        (1, "<", False, lambda ip: bytes(12) + b"\x08\x00" + ip),  # Ethernet
        (1, "<", False, lambda ip: bytes(12) + b"\x81\x00\x00\x05\x08\x00" + ip),  # 802.1Q
        (113, "<", False, lambda ip: bytes(14) + b"\x08\x00" + ip),  # Linux cooked
    ],
)
def test_pcap_variants(linktype: int, order: str, nano: bool, wrap: object) -> None:
    records = [(t, wrap(frame)) for t, frame in tone_packets(A, RELAY_FOR_A, 440, 0, 3, 7.0)]  # type: ignore[operator]
    packets = rtp_packets(pcap(records, linktype, order, nano))
    assert [(p.sequence, p.source, p.destination) for p in packets] == [
        (0, A, RELAY_FOR_A),
        (1, A, RELAY_FOR_A),
        (2, A, RELAY_FOR_A),
    ]
    assert packets[1].time == pytest.approx(7.02)


def test_ipv6_and_rtp_header_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x90 | 0x20 | 0x01, 0x80, 7, 320, 5)  # X, P, one CSRC; M
    payload = (
        header
        + struct.pack("!I", 99)
        + b"\xbe\xde\x00\x01"
        + b"\x10\xaa\x00\x00"
        + b"\xff" * 160
        + b"\x00\x00\x03"
    )
    frame = ipv6_udp(("2001:db8::1", 16000), ("2001:db8::2", 30000), payload)
    (packet,) = rtp_packets(pcap([(1.0, frame)], 229))
    assert packet.source == ("2001:db8::1", 16000) and packet.marker
    assert packet.payload == b"\xff" * 160 and packet.ssrc == 5


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="magic"):
        rtp_packets(b"\x0a\x0d\x0d\x0a" + bytes(40))  # pcapng is not read
    with pytest.raises(RecordingError, match="header"):
        rtp_packets(b"\xd4\xc3\xb2\xa1")
    records = tone_packets(A, RELAY_FOR_A, 440, 0, 3, 1.0)
    truncated = pcap(records)[:-10]  # rtpengine was writing when we read
    assert len(rtp_packets(truncated)) == 2
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(pcap([(1.0, ipv4_udp(A, B, b"hello"))]))
    with pytest.raises(RecordingError, match=r"no G\.711"):
        pcap_to_wav(empty, tmp_path / "x.wav")


# --------------------------------------------------------------------------------------------
# A real recorded call


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    engine = start_rtpengine(IP, tmp_path_factory.mktemp("rtpengine-rec"), recording=True)
    yield engine
    engine.stop()


def test_a_recorded_call_becomes_a_wav(recorder: Rtpengine, tmp_path: Path) -> None:
    call = CallRef("rec-1@127.0.77.31", "caller")
    seconds = 2.0
    packets = int(seconds * 50)

    async def scenario() -> None:
        ng = NgClient(IP, NG_PORT)
        try:
            offer = await ng.offer(call, sdp(*CALLER, "0 8 101"), MediaOptions(record_call=True))
            answer = await ng.answer(call.answered_by("callee"), sdp(*CALLEE, "0 8 101"))
            to_callee_side = SessionDescription.parse(offer).media[0].port
            to_caller_side = SessionDescription.parse(answer).media[0].port
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(CALLER)
                b.bind(CALLEE)
                start = time.monotonic()
                for i in range(packets):  # 50 packets a second each way, paced in real time
                    a.sendto(rtp(0, i, 160 * i, 0xA, tone(440, 0, i)), (IP, to_caller_side))
                    b.sendto(rtp(8, 1000 + i, 160 * i, 0xB, tone(1000, 8, i)), (IP, to_callee_side))
                    await asyncio.sleep(max(0.0, start + 0.02 * (i + 1) - time.monotonic()))
                deadline = time.monotonic() + 3
                while (await ng.query(call.call_id)).rtp.packets < 2 * packets:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            await ng.delete(call.call_id)
        finally:
            ng.close()

    asyncio.run(scenario())
    assert recorder.config.recording_dir is not None
    deadline = time.monotonic() + 3
    while (
        not (found := find_recordings(recorder.config.recording_dir, call.call_id))
        or found[0].metadata is None
    ):
        assert time.monotonic() < deadline, "rtpengine wrote no recording"
        time.sleep(0.05)
    (recording,) = found
    assert recording.pcap.name.startswith("rec-1%40127.0.77.31-")

    info = pcap_to_wav(recording.pcap, tmp_path / "call.wav", metadata=recording.metadata)
    assert info.duration == pytest.approx(seconds, rel=0.1)
    assert [(s.channel, s.source, s.packets) for s in info.streams] == [
        ("caller", CALLER, packets),
        ("callee", CALLEE, packets),
    ]
    count, (left, right) = channels(tmp_path / "call.wav")
    assert count == 2
    assert rms(left) > 3000 and rms(right) > 3000  # not silent
    assert frequency(left) == pytest.approx(440, rel=0.1)  # the caller on the left
    assert frequency(right) == pytest.approx(1000, rel=0.1)  # the callee on the right
