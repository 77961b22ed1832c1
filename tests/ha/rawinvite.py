"""One hand-written INVITE and its first final answer: how a stranger or a customer tries a
node directly (a forged dispatcher header, a missing token).

Run inside a lab host: ``python -m ha.rawinvite SOURCE_IP DEST_HOST:PORT DIALLED
[--uri-params ;ss-token=...] [--header "Name: value"] [--call-id ID]``; prints the status
line of the first final answer (``SIP/2.0 403 ...``) or exits 1 after ``--timeout`` s.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

_SDP = "v=0\r\no=x 1 1 IN IP4 {0}\r\ns=-\r\nc=IN IP4 {0}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def invite(
    source_ip: str,
    dest: str,
    dialled: str,
    *,
    uri_params: str = "",
    headers: list[str] | None = None,
    call_id: str = "",
    timeout: float = 5.0,
) -> str:
    """Send one INVITE from ``source_ip`` to ``dest``; the first final answer's status line."""
    host, port = dest.rsplit(":", 1)
    call_id = call_id or f"raw-{time.monotonic_ns()}"
    extra = "".join(f"{h}\r\n" for h in headers or [])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()
        sdp = _SDP.format(source_ip)
        message = (
            f"INVITE sip:{dialled}@{dest}{uri_params} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:x@{local[0]}>;tag=t1\r\nTo: <sip:{dialled}@{dest}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:x@{local[0]}:{local[1]}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        sock.sendto(message.encode(), (host, int(port)))
        while True:
            data, _ = sock.recvfrom(65535)
            status = data.split(b"\r\n", 1)[0].decode()
            if not status.startswith("SIP/2.0 1"):
                return status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source_ip")
    parser.add_argument("dest")
    parser.add_argument("dialled")
    parser.add_argument("--uri-params", default="")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--call-id", default="")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        status = invite(
            args.source_ip,
            args.dest,
            args.dialled,
            uri_params=args.uri_params,
            headers=args.header,
            call_id=args.call_id,
            timeout=args.timeout,
        )
    except TimeoutError:
        print("no final answer", file=sys.stderr)
        return 1
    print(status)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
