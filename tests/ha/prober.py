"""The customer: OPTIONS to ``TARGET:5060`` every ``INTERVAL`` s, one line per answer.

Run inside the customer host (``python -m ha.prober TARGET INTERVAL DURATION``). Each answer
prints ``<time.monotonic()> <node> <source address>``, the node being the ``Server: lab-NODE``
of :mod:`ha.sipresponder`; the clock is the machine's monotonic clock, the same in every
namespace, so the test compares it with its own. It stops by itself after ``DURATION`` s.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import sys
import time

PORT = 5060


def main(argv: list[str]) -> int:
    target, interval, duration = argv[0], float(argv[1]), float(argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    port = sock.getsockname()[1]
    started = time.monotonic()
    next_send = started
    n = 0
    print("started", flush=True)
    while (now := time.monotonic()) < started + duration:
        if now >= next_send:
            n += 1
            request = (
                f"OPTIONS sip:{target}:{PORT} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 0.0.0.0:{port};branch=z9hG4bK-probe-{n};rport\r\n"
                f"From: <sip:probe@customer>;tag=p{n}\r\nTo: <sip:{target}>\r\n"
                f"Call-ID: probe-{n}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            # No ARP answer yet (EHOSTUNREACH): the next probe tries again.
            with contextlib.suppress(OSError):
                sock.sendto(request.encode(), (target, PORT))
            next_send += interval
            if next_send < now:
                next_send = now + interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if ready:
            try:
                data, source = sock.recvfrom(65535)
            except OSError:
                continue
            match = re.search(rb"\r\nServer: lab-(\w+)", data)
            node = match.group(1).decode() if match else "?"
            print(f"{time.monotonic():.6f} {node} {source[0]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
