"""A synthetic two-leg call, as a B2BUA's transport would see it: the A leg between the caller
(127.0.0.2) and the switch (127.0.0.1), the B leg between the switch and the callee (127.0.0.3),
each leg with its own Call-ID (topology hiding), 7 messages each: INVITE, 100, 180, 200, ACK,
BYE, 200.  The same call over IPv6 uses 2001:db8::2, ::1 and ::3 (documentation addresses:
these only ever appear inside files)."""

from __future__ import annotations

import zlib

from smartswitch.capture.pcap import CapturedMessage

A_CALL_ID = "a84b4c76e66710@caller.example"
B_CALL_ID = "b2b-7f3e9c1d5a@switch.example"

_SDP = (
    "v=0\r\n"
    "o=- 1 1 IN {ipv} {host}\r\n"
    "s=-\r\n"
    "c=IN {ipv} {host}\r\n"
    "t=0 0\r\n"
    "m=audio {rtp} RTP/AVP 8 0\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _message(first: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [first, *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class _Leg:
    def __init__(
        self,
        call_id: str,
        uac: tuple[str, int],
        uas: tuple[str, int],
        transport: str,
        from_user: str,
        to_user: str,
    ) -> None:
        self.call_id = call_id
        self.uac = uac
        self.uas = uas
        self.transport = transport
        self.from_user = from_user
        self.to_user = to_user
        self.from_tag = f"ft{zlib.crc32(call_id.encode()) % 10_000}"
        self.to_tag = f"tt{zlib.crc32(call_id.encode()) % 10_000}"

    def _sdp(self, host: str, rtp: int) -> str:
        return _SDP.format(ipv="IP6" if ":" in host else "IP4", host=host, rtp=rtp)

    def request(self, method: str, cseq: int, branch: str, tagged: bool, body: str = "") -> bytes:
        uas = _hostport(*self.uas)
        uac = _hostport(*self.uac)
        to = f"<sip:{self.to_user}@{uas}>" + (f";tag={self.to_tag}" if tagged else "")
        return _message(
            f"{method} sip:{self.to_user}@{uas} SIP/2.0",
            [
                ("Via", f"SIP/2.0/{self.transport.upper()} {uac};branch=z9hG4bK{branch}"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.from_user}@{uac}>;tag={self.from_tag}"),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:{self.from_user}@{uac};transport={self.transport}>"),
            ],
            body,
        )

    def response(
        self, status: int, reason: str, method: str, cseq: int, branch: str, body: str = ""
    ) -> bytes:
        uas = _hostport(*self.uas)
        uac = _hostport(*self.uac)
        to = f"<sip:{self.to_user}@{uas}>" + (f";tag={self.to_tag}" if status > 100 else "")
        return _message(
            f"SIP/2.0 {status} {reason}",
            [
                ("Via", f"SIP/2.0/{self.transport.upper()} {uac};branch=z9hG4bK{branch}"),
                ("From", f"<sip:{self.from_user}@{uac}>;tag={self.from_tag}"),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:{self.to_user}@{uas};transport={self.transport}>"),
            ],
            body,
        )


def two_leg_call(
    transport: str = "udp", ipv6: bool = False, start: float = 1_700_000_000.25
) -> list[CapturedMessage]:
    """The 14 messages of an answered and hung-up call, in wire order, 10 ms apart (the
    answer 3 s after the INVITE, the BYE 30 s after the answer)."""
    if ipv6:
        caller, switch, callee = "2001:db8::2", "2001:db8::1", "2001:db8::3"
    else:
        caller, switch, callee = "127.0.0.2", "127.0.0.1", "127.0.0.3"
    a = _Leg(A_CALL_ID, (caller, 5061), (switch, 5060), transport, "alice", "15551234567")
    b = _Leg(B_CALL_ID, (switch, 5060), (callee, 5070), transport, "alice", "15551234567")
    a_offer = a._sdp(caller, 16000)
    b_offer = b._sdp(switch, 30000)
    b_answer = b._sdp(callee, 17000)
    a_answer = a._sdp(switch, 30002)
    A_IN, A_OUT = (a.uac, a.uas), (a.uas, a.uac)
    B_OUT, B_IN = (b.uac, b.uas), (b.uas, b.uac)
    steps: list[tuple[float, tuple[tuple[str, int], tuple[str, int]], bytes]] = [
        (0.000, A_IN, a.request("INVITE", 1, "a1", False, a_offer)),
        (0.001, A_OUT, a.response(100, "Trying", "INVITE", 1, "a1")),
        (0.002, B_OUT, b.request("INVITE", 1, "b1", False, b_offer)),
        (0.010, B_IN, b.response(100, "Trying", "INVITE", 1, "b1")),
        (0.500, B_IN, b.response(180, "Ringing", "INVITE", 1, "b1")),
        (0.501, A_OUT, a.response(180, "Ringing", "INVITE", 1, "a1")),
        (3.000, B_IN, b.response(200, "OK", "INVITE", 1, "b1", b_answer)),
        (3.001, A_OUT, a.response(200, "OK", "INVITE", 1, "a1", a_answer)),
        (3.010, A_IN, a.request("ACK", 1, "a2", True)),
        (3.011, B_OUT, b.request("ACK", 1, "b2", True)),
        (33.000, A_IN, a.request("BYE", 2, "a3", True)),
        (33.001, B_OUT, b.request("BYE", 2, "b3", True)),
        (33.010, B_IN, b.response(200, "OK", "BYE", 2, "b3")),
        (33.011, A_OUT, a.response(200, "OK", "BYE", 2, "a3")),
    ]
    return [
        CapturedMessage(start + offset, transport, src, dst, data)
        for offset, (src, dst), data in steps
    ]
