"""Each captured message as HEP3, over UDP, to a Homer collector (heplify-server, Kamailio's
sipcapture, sngrep ``-L``).

One plain non-blocking UDP socket, connected to the collector so the address is resolved once
and ``send`` is a single system call on the event loop.  A datagram that cannot be sent (the
socket buffer is full, the collector answers with ICMP port unreachable, the network is down)
is counted in ``errors`` and forgotten: monitoring never holds up a call.
"""

from __future__ import annotations

import socket

from smartswitch.capture.hep import IPPROTO_TCP, IPPROTO_UDP, HepError, encode_fields

__all__ = ["HepSender"]

Address = tuple[str, int]


class HepSender:
    """Sends messages as HEP3 to ``host:port`` with capture agent id ``capture_id`` (a uint32
    naming this node in Homer) and, when the collector wants one, ``auth_key``.

    ``host`` is resolved once, here (a name blocks while it is looked up: make the sender
    when the node starts or its settings change, not on the call path)."""

    def __init__(
        self, host: str, port: int, capture_id: int, auth_key: bytes | None = None
    ) -> None:
        if not 0 <= capture_id <= 0xFFFFFFFF:
            raise ValueError("the HEP capture id is a uint32")
        self.capture_id = capture_id
        self.auth_key = auth_key
        self.sent = 0
        self.errors = 0
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self._socket = socket.socket(family, kind, proto)
        self._socket.setblocking(False)
        self._socket.connect(address)

    def send(
        self,
        correlation_id: bytes,
        transport: str,
        src: Address,
        dst: Address,
        data: bytes,
        wall_time: float,
    ) -> None:
        """Send one message (see :class:`smartswitch.capture.recorder.HepSink`)."""
        micros = round(wall_time * 1_000_000)
        seconds, micros = divmod(micros, 1_000_000)
        try:
            packet = encode_fields(
                src,
                dst,
                data,
                seconds,
                micros,
                self.capture_id,
                IPPROTO_UDP if transport == "udp" else IPPROTO_TCP,
                correlation_id,
                self.auth_key,
            )
            self._socket.send(packet)
        except (OSError, HepError):
            self.errors += 1
            return
        self.sent += 1

    def close(self) -> None:
        self._socket.close()
