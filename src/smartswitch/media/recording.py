"""Recordings: find rtpengine's pcap of a call and make a WAV of it for the browser.

rtpengine 10.5 records in userspace with ``--recording-method=pcap`` (the ``proc`` method and
``rtpengine-recording``, which write audio files, need the kernel module). For each recorded
call it writes, under ``--recording-dir``:

- ``pcaps/<call-id>-<16 hex>.pcap``: every packet rtpengine *received* for the call, as raw IP
  (link type 101), in arrival order; the call-id is URI-escaped (GLib's
  ``g_uri_escape_string``: everything but ``A-Za-z0-9-._~`` as ``%XX``);
- ``metadata/rtpengine-meta-<call-id>-<16 hex>.txt`` once the call is deleted: the pcap's path,
  then for each offer and answer a block ``SDP mode: offer|answer`` with the SDP rtpengine sent
  out. The port in the *answer* SDP is where the caller sends; the one in the offer, where the
  callee sends. That is how :func:`pcap_to_wav` tells the two sides apart.

The WAV is 16-bit PCM at 8 kHz, the caller on the left and the callee on the right (or both
mixed to mono). Each side's RTP stream is decoded (G.711 µ-law, payload type 0, and A-law, 8;
other payloads, DTMF events and comfort noise included, become silence), ordered by sequence
number and placed by RTP timestamp, gaps filled with silence; the two sides are aligned on
the capture times. Only the standard library: ``audioop`` is deprecated (gone in 3.13), so
the G.711 decoding is a table of our own (ITU-T G.711, the same values as ``audioop``).
"""

from __future__ import annotations

import ipaddress
import re
import struct
import sys
import urllib.parse
import wave
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ALAW",
    "MAX_SECONDS",
    "SAMPLE_RATE",
    "ULAW",
    "Recording",
    "RecordingError",
    "RtpPacket",
    "StreamInfo",
    "WavInfo",
    "find_recordings",
    "pcap_to_wav",
    "read_pcap",
    "rtp_packets",
    "sides_from_metadata",
]

SAMPLE_RATE = 8000
MAX_SECONDS = 6 * 3600  # a recording longer than this is garbage (timestamps gone wild)


class RecordingError(ValueError):
    """The file is not a pcap we can read, or holds nothing we can turn into audio."""


# --------------------------------------------------------------------------------------------
# G.711 (ITU-T G.711), decoded to 16-bit linear as audioop.ulaw2lin / alaw2lin do


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent = (byte >> 4) & 0x07
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def _alaw(byte: int) -> int:
    byte ^= 0x55
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    # Segment 0 is linear; each further segment doubles the step (and adds the implied 1).
    magnitude = ((mantissa << 4) + 0x108) << (exponent - 1) if exponent else (mantissa << 4) + 8
    return magnitude if byte & 0x80 else -magnitude


ULAW: tuple[int, ...] = tuple(_ulaw(byte) for byte in range(256))
ALAW: tuple[int, ...] = tuple(_alaw(byte) for byte in range(256))
_LAWS = {0: ULAW, 8: ALAW}


# --------------------------------------------------------------------------------------------
# Finding a call's files


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording of a call (a call recorded, stopped and restarted has several)."""

    call_id: str
    pcap: Path
    metadata: Path | None  # written when the call is deleted; None before


def recording_prefix(call_id: str) -> str:
    """The call-id as rtpengine writes it in file names (GLib's URI escaping, upper-case hex)."""
    return urllib.parse.quote(call_id, safe="")


def find_recordings(recording_dir: Path, call_id: str) -> list[Recording]:
    """The call's recordings under ``recording_dir``, oldest first."""
    prefix = recording_prefix(call_id)
    found = []
    for pcap in (recording_dir / "pcaps").glob(f"{prefix}-*.pcap"):
        suffix = pcap.stem[len(prefix) + 1 :]
        if not re.fullmatch(r"[0-9a-f]+", suffix):
            continue  # another call whose id starts with this one and a "-"
        metadata = recording_dir / "metadata" / f"rtpengine-meta-{pcap.stem}.txt"
        found.append(
            (
                pcap.stat().st_mtime,
                Recording(call_id, pcap, metadata if metadata.exists() else None),
            )
        )
    return [recording for _, recording in sorted(found, key=lambda item: item[0])]


def sides_from_metadata(text: str) -> tuple[int | None, int | None]:
    """``(caller_port, callee_port)``: the relay ports each side sends to, from the metadata.

    The first answer's SDP went to the caller (so the caller sends to its audio port); the first
    offer's SDP went to the callee.
    """
    ports: dict[str, int] = {}
    for block in re.split(r"(?m)^SDP mode: ", text)[1:]:
        mode = block.split("\n", 1)[0].strip()
        match = re.search(r"(?m)^m=audio (\d+)", block)
        if match and mode in ("offer", "answer") and mode not in ports:
            ports[mode] = int(match.group(1))
    return ports.get("answer"), ports.get("offer")


# --------------------------------------------------------------------------------------------
# Reading a pcap


@dataclass(frozen=True, slots=True)
class RtpPacket:
    time: float  # capture time, seconds since the epoch
    source: tuple[str, int]
    destination: tuple[str, int]
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def read_pcap(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    """``(time, link type, frame)`` for each record of a classic pcap file (not pcapng)."""
    if len(data) < 24:
        raise RecordingError("not a pcap file (shorter than its header)")
    magic = data[:4]
    formats = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    if magic not in formats:
        raise RecordingError("not a pcap file (unknown magic number)")
    order, unit = formats[magic]
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = record.unpack_from(data, offset)
        offset += 16
        if offset + captured > len(data):
            return  # a truncated last record: rtpengine still writing, or a crash
        yield seconds + fraction * unit, linktype, data[offset : offset + captured]
        offset += captured


def _ip_packet(linktype: int, frame: bytes) -> bytes | None:
    if linktype in (101, 228, 229, 12, 14):  # raw IP (101; 12 and 14 on some systems), IPv4, IPv6
        return frame
    if linktype == 1:  # Ethernet, with 802.1Q tags
        offset, ethertype = 12, 0
        while offset + 2 <= len(frame):
            ethertype = int.from_bytes(frame[offset : offset + 2], "big")
            offset += 2
            if ethertype not in (0x8100, 0x88A8):
                break
            offset += 2
        return frame[offset:] if ethertype in (0x0800, 0x86DD) else None
    if linktype == 113:  # Linux cooked capture
        return frame[16:]
    if linktype == 276:  # Linux cooked capture v2
        return frame[20:]
    if linktype == 0:  # BSD loopback: a 4-byte address family
        return frame[4:]
    return None


def _udp(packet: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | None:
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        header = (packet[0] & 0x0F) * 4
        if len(packet) < header + 8 or packet[9] != 17 or header < 20:
            return None
        if int.from_bytes(packet[6:8], "big") & 0x3FFF:
            return None  # a fragment: RTP is never fragmented, and we do not reassemble
        source = ".".join(str(b) for b in packet[12:16])
        destination = ".".join(str(b) for b in packet[16:20])
    elif version == 6:
        header = 40
        if len(packet) < header + 8 or packet[6] != 17:
            return None  # extension headers are not used for RTP
        source = _ipv6(packet[8:24])
        destination = _ipv6(packet[24:40])
    else:
        return None
    sport, dport, length = struct.unpack_from("!HHH", packet, header)
    end = min(header + max(length, 8), len(packet))
    return (source, sport), (destination, dport), packet[header + 8 : end]


def _ipv6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def _rtp(payload: bytes) -> tuple[int, bool, int, int, int, bytes] | None:
    """RFC 3550 section 5.1: version 2, CSRCs, header extension, padding; RTCP refused."""
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return None
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", payload)
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:
        return None  # RTCP (packet types 200-204) multiplexed on the RTP port, RFC 5761
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(payload) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(payload[offset + 2 : offset + 4], "big")
    end = len(payload)
    if first & 0x20:
        if end <= offset:
            return None
        end -= payload[-1]
    if end < offset:
        return None
    return payload_type, bool(second & 0x80), sequence, timestamp, ssrc, payload[offset:end]


def rtp_packets(data: bytes) -> list[RtpPacket]:
    """Every RTP packet (version 2, over UDP) in a pcap, in capture order."""
    packets = []
    for time, linktype, frame in read_pcap(data):
        ip = _ip_packet(linktype, frame)
        udp = _udp(ip) if ip is not None else None
        if udp is None:
            continue
        rtp = _rtp(udp[2])
        if rtp is None:
            continue
        payload_type, marker, sequence, timestamp, ssrc, payload = rtp
        packets.append(
            RtpPacket(
                time, udp[0], udp[1], payload_type, marker, sequence, timestamp, ssrc, payload
            )
        )
    return packets


# --------------------------------------------------------------------------------------------
# Decoding and writing


@dataclass(frozen=True, slots=True)
class StreamInfo:
    source: tuple[str, int]
    destination: tuple[str, int]
    ssrc: int
    packets: int
    payload_types: tuple[int, ...]
    channel: str  # "caller", "callee" or "mixed"
    start: float  # seconds from the start of the WAV


@dataclass(frozen=True, slots=True)
class WavInfo:
    path: Path
    channels: int
    frames: int
    streams: tuple[StreamInfo, ...]

    @property
    def duration(self) -> float:
        return self.frames / SAMPLE_RATE


def _decode(packets: list[RtpPacket]) -> tuple[float, array[int]]:
    """One stream's packets as 16-bit samples, and the capture time of the first of them
    (the first in sequence order, which need not be the first to arrive).

    Payload types other than G.711 become silence.

    Ordered by extended sequence number (duplicates dropped); each packet's place is the
    previous one's plus the RTP timestamp difference, unless that disagrees with the capture
    times by over a second (a timestamp jump: then the capture time decides).
    """
    extended: dict[int, RtpPacket] = {}
    highest: int | None = None
    for packet in packets:
        if highest is None:
            number = 1 << 16 | packet.sequence  # room below for packets older than the first
        else:
            number = (highest & ~0xFFFF) | packet.sequence
            if number - highest > 0x8000:
                number -= 0x10000
            elif highest - number > 0x8000:
                number += 0x10000
        highest = number if highest is None else max(highest, number)
        extended.setdefault(number, packet)
    # Only voice places audio: DTMF events (RFC 4733) carry the timestamp of the event's
    # start, comfort noise stands for silence; the gaps they leave are filled with silence.
    ordered = [extended[key] for key in sorted(extended) if extended[key].payload_type in _LAWS]
    samples = array("h")
    position = 0
    last: RtpPacket | None = None
    for packet in ordered:
        if last is not None:
            delta = (packet.timestamp - last.timestamp) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 1 << 32
            wall = round((packet.time - last.time) * SAMPLE_RATE)
            if abs(delta - wall) > SAMPLE_RATE:
                delta = max(wall, 0)
            position += delta
        last = packet
        if position > MAX_SECONDS * SAMPLE_RATE:
            raise RecordingError("stream longer than MAX_SECONDS")
        if position < 0:
            continue
        table = _LAWS[packet.payload_type]
        decoded = array("h", [table[byte] for byte in packet.payload])
        end = position + len(decoded)
        if end > len(samples):
            samples.extend(array("h", bytes(2 * (end - len(samples)))))
        samples[position:end] = decoded
    return (ordered[0].time if ordered else 0.0), samples


def pcap_to_wav(
    pcap: Path,
    wav: Path,
    *,
    metadata: Path | None = None,
    stereo: bool = True,
) -> WavInfo:
    """Write ``wav`` from the call recorded in ``pcap``; what went into it.

    The two sides are told apart by ``metadata`` (rtpengine's file for the recording) when
    given: the caller's packets go to the relay port in the answer SDP. Without it, the stream
    heard first is the caller. Further streams (an SSRC change on re-INVITE) join the side
    whose relay port they were sent to. Raises :class:`RecordingError` when the pcap holds no
    audio RTP.
    """
    packets = rtp_packets(pcap.read_bytes())
    streams: dict[tuple[tuple[str, int], tuple[str, int], int], list[RtpPacket]] = {}
    for packet in packets:
        streams.setdefault((packet.source, packet.destination, packet.ssrc), []).append(packet)
    audio = {
        key: value for key, value in streams.items() if any(p.payload_type in _LAWS for p in value)
    }
    if not audio:
        raise RecordingError(f"{pcap.name}: no G.711 RTP stream")
    caller_port, callee_port = (None, None)
    if metadata is not None and metadata.exists():
        caller_port, callee_port = sides_from_metadata(metadata.read_text(errors="replace"))
    keys = sorted(audio, key=lambda key: audio[key][0].time)
    if caller_port is None or callee_port is None:
        # Without metadata: the destination port of the first stream heard is the caller's.
        caller_port = keys[0][1][1]
        callee_port = next((key[1][1] for key in keys if key[1][1] != caller_port), None)
    start = min(audio[key][0].time for key in keys)
    channels: dict[str, array[int]] = {"caller": array("h"), "callee": array("h")}
    infos = []
    for key in keys:
        side = (
            "caller" if key[1][1] == caller_port else "callee" if key[1][1] == callee_port else None
        )
        if side is None:
            continue
        stream = audio[key]
        first, samples = _decode(stream)
        offset = max(0, round((first - start) * SAMPLE_RATE))
        _mix_into(channels[side], samples, offset)
        infos.append(
            StreamInfo(
                source=key[0],
                destination=key[1],
                ssrc=key[2],
                packets=len(stream),
                payload_types=tuple(sorted({p.payload_type for p in stream})),
                channel=side if stereo else "mixed",
                start=offset / SAMPLE_RATE,
            )
        )
    frames = max(len(channels["caller"]), len(channels["callee"]))
    for samples in channels.values():
        samples.extend(array("h", bytes(2 * (frames - len(samples)))))
    if stereo:
        out = array("h", bytes(4 * frames))
        out[0::2] = channels["caller"]
        out[1::2] = channels["callee"]
    else:
        out = array("h", bytes(2 * frames))
        _mix_into(out, channels["caller"], 0)
        _mix_into(out, channels["callee"], 0)
    if sys.byteorder == "big":
        out.byteswap()  # WAV is little-endian
    with wave.open(str(wav), "wb") as writer:
        writer.setnchannels(2 if stereo else 1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(out.tobytes())
    return WavInfo(wav, 2 if stereo else 1, frames, tuple(infos))


def _mix_into(target: array[int], samples: array[int], offset: int) -> None:
    """Add ``samples`` into ``target`` from ``offset`` (growing it), clipped to 16 bits."""
    if offset >= len(target):  # nothing there yet: append, no sum needed
        target.extend(array("h", bytes(2 * (offset - len(target)))))
        target.extend(samples)
        return
    end = offset + len(samples)
    if end > len(target):
        target.extend(array("h", bytes(2 * (end - len(target)))))
    for index, value in enumerate(samples, offset):
        if value:
            mixed = target[index] + value
            target[index] = 32767 if mixed > 32767 else -32768 if mixed < -32768 else mixed
