"""A stand-in for a node's SIP loop: answers every request with a 200 naming the node.

Run inside a lab host (``python -m ha.sipresponder NODE ADDRESS [SHARED_IP]``); it parses
and answers with the switch's own SIP code (``smartswitch.sip``). It listens on
``ADDRESS:5060`` (where the node's health check asks) and, when given, on ``SHARED_IP:5060``
bound with ``IP_FREEBIND`` before the address is there, as the node's transport will. Each
answer carries ``Server: lab-NODE`` so the customer can tell who answered, and goes back from
the socket the request came in on (so from the shared IP when asked there). SIGSTOP it to get
a node whose SIP loop is stuck.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys

from smartswitch.cluster.vip import udp_socket_freebind
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Request, make_response, parse_message

PORT = 5060


def answer(data: bytes, node: str) -> bytes | None:
    """The 200 for a request, parsed and answered with the switch's own SIP code (a message
    the switch would refuse gets no answer: the health check must send real SIP)."""
    try:
        request = parse_message(data, require_content_length=True)
    except SipParseError:
        return None
    if not isinstance(request, Request):
        return None
    response = make_response(request, 200, None, f"lab-{node}")
    response.headers.add("Server", f"lab-{node}")
    return response.to_bytes()


def main(argv: list[str]) -> int:
    node, address = argv[0], argv[1]
    shared_ip = argv[2] if len(argv) > 2 else None
    selector = selectors.DefaultSelector()
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind((address, PORT))
    own.setblocking(False)
    selector.register(own, selectors.EVENT_READ)
    if shared_ip is not None:
        selector.register(udp_socket_freebind(shared_ip, PORT), selectors.EVENT_READ)
    print(f"listening {os.getpid()}", flush=True)
    while True:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data, source = sock.recvfrom(65535)
            except OSError:
                continue
            reply = answer(data, node)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, source)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
