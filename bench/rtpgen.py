"""G.711 streams for many calls from one UDP socket per side, counted packet by packet.

Each side of the relay (the callers, the callees) is one process with one socket: for every
call it sends a 20 ms RTP packet (12-byte header, 160 bytes of PCMA: 172 bytes) to the relay's
port of that call, the calls spread over the 20 ms (call ``i`` sends at ``i mod 20`` ms), and
counts what the relay forwards to it by the relay's source port, which names the call (the
relay sends a call's media to this side from the port this side sends that call's media to).

A loss is then exact: what one side sent for a call against what the other side received for
it. Both sides' sockets get 4 MiB buffers so that the generator's own receive queue is not
where packets are dropped, and the kernel's count of what it dropped there anyway is reported
(``drops``: a loss of the generator's, not of the relay's); ``late_ms`` says how far behind its
1 ms schedule the sender fell (a generator short of CPU shows there first).
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue

PAYLOAD = bytes([0xD5]) * 160  # A-law silence: 20 ms at 8 kHz
PERIOD = 0.020
BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Side:
    """One side's work: its socket's address, the relay's address and each call's port there."""

    ip: str
    port: int
    relay_ip: str
    relay_ports: tuple[int, ...]  # index = call
    ssrc_base: int


@dataclass(frozen=True, slots=True)
class Counts:
    sent: tuple[int, ...]  # per call
    received: dict[int, int]  # per relay source port
    late_ms: float  # worst lag behind the sending schedule
    drops: int  # packets for this side the kernel dropped at its socket (queue full)


def _run(side: Side, start_at: float, seconds: float, drain: float, out: Queue[Counts]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
    sock.bind((side.ip, side.port))
    sock.setblocking(False)
    calls = len(side.relay_ports)
    packets = [
        bytearray(struct.pack("!BBHII", 0x80, 8, 0, 0, side.ssrc_base + i) + PAYLOAD)
        for i in range(calls)
    ]
    targets = [(side.relay_ip, port) for port in side.relay_ports]
    by_phase: list[list[int]] = [[] for _ in range(20)]
    for i in range(calls):
        by_phase[i % 20].append(i)
    sent = [0] * calls
    received: dict[int, int] = {}
    late = 0.0
    recvfrom = sock.recvfrom
    sendto = sock.sendto

    def drain_now() -> None:
        while True:
            try:
                _, address = recvfrom(2048)
            except BlockingIOError:
                return
            port = address[1]
            received[port] = received.get(port, 0) + 1

    while time.time() < start_at:
        drain_now()
        time.sleep(0.001)
    t0 = time.monotonic()
    ticks = int(seconds * 1000)
    for tick in range(ticks):
        due = t0 + tick * 0.001
        drain_now()  # every tick, late or not: a full receive queue would drop the relay's
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        for i in by_phase[tick % 20]:
            packet = packets[i]
            n = sent[i]
            struct.pack_into("!HI", packet, 2, n & 0xFFFF, (n * 160) & 0xFFFFFFFF)
            try:
                sendto(packet, targets[i])
            except (BlockingIOError, OSError):
                continue  # counted as not sent: the loss is the relay's, not ours
            sent[i] = n + 1
    end = time.monotonic() + drain
    while time.monotonic() < end:
        drain_now()
        time.sleep(0.002)
    drops = socket_drops(side.ip, side.port)
    sock.close()
    out.put(Counts(tuple(sent), received, round(late * 1000, 2), drops))


def socket_drops(ip: str, port: int) -> int:
    """What the kernel dropped for the UDP socket bound to ``ip:port`` (its receive queue
    full): the ``drops`` column of /proc/net/udp."""
    local = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local:
                return int(fields[-1])
    return -1


def run_sides(
    sides: tuple[Side, Side], seconds: float, drain: float = 0.5
) -> tuple[Counts, Counts]:
    """Both sides' streams for ``seconds`` (each side in its own process, started together),
    then ``drain`` seconds more to receive what is still in flight; their counts."""
    context = multiprocessing.get_context("fork")
    queues: list[Queue[Counts]] = [context.Queue() for _ in sides]
    start_at = time.time() + 0.3
    procs = [
        context.Process(target=_run, args=(side, start_at, seconds, drain, queue), daemon=True)
        for side, queue in zip(sides, queues, strict=True)
    ]
    for proc in procs:
        proc.start()
    try:
        results = tuple(queue.get(timeout=seconds + drain + 30) for queue in queues)
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    first, second = results
    return first, second
