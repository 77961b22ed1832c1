"""Whether the node's SIP side answers: an OPTIONS to its own SIP port, over UDP.

The watchdog (runtime/systemd.py) feeds systemd only when this says yes, so a node whose loop
still runs but whose SIP transport is gone (closed socket, a wedged endpoint) is restarted as
surely as one whose loop is stuck. OPTIONS outside a dialog is answered by the SIP
application itself (RFC 3261 11.2): no policy, no database on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os

__all__ = ["SipProbe"]

_COUNTER = itertools.count(1)


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, call_id: bytes) -> None:
        self.call_id = call_id
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.call_id in data and not self.done.done():
            self.done.set_result(data.startswith(b"SIP/2.0 2"))


class SipProbe:
    """Asks ``host:port`` (the node's own SIP; a wildcard means loopback) for OPTIONS."""

    def __init__(self, host: str, port: int) -> None:
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        self.host = host
        self.port = port

    def _options(self, local: tuple[str, int], call_id: str, n: int) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        me = f"[{local[0]}]" if ":" in local[0] else local[0]
        return (
            f"OPTIONS sip:{host}:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me}:{local[1]};branch=z9hG4bK-watchdog-{n}\r\n"
            f"From: <sip:watchdog@{me}>;tag=wd{n}\r\n"
            f"To: <sip:{host}:{self.port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    async def __call__(self, timeout: float) -> bool:
        """True if a 2xx came back within ``timeout`` seconds."""
        n = next(_COUNTER)
        call_id = f"watchdog-{os.getpid()}-{n}"
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Answer(call_id.encode()), remote_addr=(self.host, self.port)
            )
        except OSError:
            return False
        try:
            local = transport.get_extra_info("sockname")
            transport.sendto(self._options((local[0], local[1]), call_id, n))
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(protocol.done), timeout)
            return False
        finally:
            transport.close()
