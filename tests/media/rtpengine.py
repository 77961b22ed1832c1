"""A real rtpengine for the media tests, started per test module on its own loopback address.

Each module uses its own address in 127.0.77.0/24 (every 127/8 address is local), so the ng
port (22222) and the RTP range (30000-30999) can be the same for all of them without
colliding, and all stay out of the kernel's ephemeral range (32768-60999). The daemon is
started from :meth:`RtpengineConfig.command_line` — the command line the node uses — and
stopped by its PID.
"""

from __future__ import annotations

import math
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from smartswitch.media import bencode
from smartswitch.media.supervisor import RtpengineConfig

RTPENGINE = "/usr/bin/rtpengine"
NG_PORT = 22222
PORT_MIN = 30000
PORT_MAX = 30999


def require_rtpengine() -> None:
    if shutil.which("rtpengine") is None and not Path(RTPENGINE).exists():
        pytest.fail("rtpengine is not installed: run scripts/install-system-deps.sh")


def ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """One ng ping over a plain socket (the fixture must not depend on the client it tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(
            b"fixture-ping-%d " % time.monotonic_ns() + bencode.encode({"command": "ping"}),
            (host, port),
        )
        try:
            data = sock.recv(65535)
        except OSError:
            return False
    return data.partition(b" ")[2] == b"d6:result4:ponge"


@dataclass
class Rtpengine:
    config: RtpengineConfig
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ip(self) -> str:
        return self.config.ng_host

    @property
    def ng(self) -> tuple[str, int]:
        return self.config.ng_host, self.config.ng_port

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_rtpengine(
    ip: str,
    workdir: Path,
    *,
    recording: bool = False,
    port_min: int = PORT_MIN,
    port_max: int = PORT_MAX,
) -> Rtpengine:
    """``port_min``-``port_max``: its RTP ports (4 a call); bench/media.py wants more."""
    require_rtpengine()
    workdir.mkdir(parents=True, exist_ok=True)
    config = RtpengineConfig(
        interface=ip,
        ng_host=ip,
        ng_port=NG_PORT,
        port_min=port_min,
        port_max=port_max,
        recording_dir=workdir / "recordings" if recording else None,
    )
    if ping(ip, NG_PORT):
        pytest.fail(f"an rtpengine already answers on {ip}:{NG_PORT} (left over from a run?)")
    log = workdir / "rtpengine.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            config.command_line(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    engine = Rtpengine(config, process, log)
    deadline = time.monotonic() + 10
    while not ping(ip, NG_PORT):
        if process.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            pytest.fail(f"rtpengine on {ip} did not start:\n{engine.tail()}")
        time.sleep(0.05)
    return engine


# --------------------------------------------------------------------------------------------
# Endpoints: the phones on either side of the relay


def sdp(ip: str, port: int, payload_types: str = "0 8 101", extra: str = "") -> bytes:
    """An offer or answer as sipp writes them, with PCMU, PCMA and telephone-event."""
    rtpmaps = {
        "0": "a=rtpmap:0 PCMU/8000\r\n",
        "8": "a=rtpmap:8 PCMA/8000\r\n",
        "18": "a=rtpmap:18 G729/8000\r\n",
        "101": "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    }
    text = (
        "v=0\r\n"
        f"o=user1 53655765 2353687637 IN IP4 {ip}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {ip}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_types}\r\n"
        + "".join(rtpmaps.get(pt, "") for pt in payload_types.split())
        + "a=ptime:20\r\n"
        + extra
    )
    return text.encode()


def _ulaw_encode(sample: int) -> int:
    """G.711 µ-law of a 16-bit sample (the classic Sun reference encoder, as audioop)."""
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + 33
    segment = max(0, value.bit_length() - 6)
    if segment >= 8:
        return 0x7F ^ mask
    return (segment << 4 | (value >> (segment + 1)) & 0x0F) ^ mask


def _alaw_encode(sample: int) -> int:
    """G.711 A-law of a 16-bit sample (the classic Sun reference encoder)."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = max(0, value.bit_length() - 5)
    if segment >= 8:
        return 0x7F ^ mask
    shift = 1 if segment < 2 else segment
    return (segment << 4 | (value >> shift) & 0x0F) ^ mask


def tone(frequency: float, payload_type: int, packet: int, amplitude: int = 8000) -> bytes:
    """20 ms (160 samples) of a sine at ``frequency``, as G.711 (PT 0 µ-law, PT 8 A-law)."""
    encode = _ulaw_encode if payload_type == 0 else _alaw_encode
    start = packet * 160
    return bytes(
        encode(round(amplitude * math.sin(2 * math.pi * frequency * (start + i) / 8000)))
        for i in range(160)
    )


def rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence & 0xFFFF, timestamp, ssrc) + payload
