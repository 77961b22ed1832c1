"""The harness's own parsing and config writing, with no process started."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

from .node import dump_toml, route, sip_uri
from .sipp import (
    SipMessage,
    free_port,
    parse_message_log,
    parse_stats,
    stat_int,
    topology_leaks,
)

# As sipp 3.6.1 writes them (trimmed to a few columns; the real header has ~90).
STATS = (
    "StartTime;LastResetTime;CurrentTime;TargetRate;TotalCallCreated;CurrentCall;"
    "SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);"
    "FailedTimeoutOnRecv(C);ResponseTime1(C);\n"
    "2026-11-24\t21:24:28.099035\t1795555468.099035;2026-11-24\t21:24:28.099035\t1;x;10;"
    "0;0;0;0;0;0;0;00:00:00:000000;\n"
    "2026-11-24\t21:24:28.099035\t1795555468.099035;2026-11-24\t21:24:28.709655\t1;x;10;"
    "5;1;2;4;1;1;1;00:00:00:001000;\n"
)

MESSAGES = (
    "----------------------------------------------- 2026-11-24 21:24:28.206101\n"
    "UDP message received [518] bytes :\n"
    "\n"
    "INVITE sip:15551234567@127.0.0.3:5070 SIP/2.0\r\n"
    "v: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-7014-1-0\r\n"
    "From: sipp <sip:sipp@127.0.0.2:5061>;tag=7014SIPpTag001\r\n"
    "i: 1-7014@127.0.0.2\r\n"
    "Subject: folded\r\n"
    " continuation\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
    "\n"
    "----------------------------------------------- 2026-11-24 21:24:28.206477\n"
    "TCP message sent (313 bytes):\n"
    "\n"
    "SIP/2.0 180 Ringing\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-7014-1-0\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
    "\n"
)


def test_parse_stats_reads_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "stats.csv"
    path.write_text(STATS)
    stats = parse_stats(path)
    assert stats["SuccessfulCall(C)"] == "4"
    assert stat_int(stats, "SuccessfulCall") == 4
    assert stat_int(stats, "FailedCall") == 1
    assert stat_int(stats, "CurrentCall") == 1
    assert stat_int(stats, "NoSuchCounter") == 0


def test_parse_stats_without_a_file(tmp_path: Path) -> None:
    assert parse_stats(tmp_path / "missing.csv") == {}


def test_parse_message_log(tmp_path: Path) -> None:
    path = tmp_path / "messages.log"
    path.write_text(MESSAGES)
    invite, ringing = parse_message_log(path)

    assert (invite.direction, invite.transport, invite.method) == ("received", "UDP", "INVITE")
    assert invite.call_id == "1-7014@127.0.0.2"  # compact "i"
    assert invite.header("via") == "SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-7014-1-0"
    assert invite.header("subject") == "folded continuation"
    assert invite.text.endswith("\n\nv=0")

    assert (ringing.direction, ringing.transport) == ("sent", "TCP")
    assert (ringing.status, ringing.reason, ringing.method) == (180, "Ringing", None)


def test_topology_leaks_looks_only_at_routing_headers() -> None:
    message = SipMessage(
        "received",
        "UDP",
        "INVITE sip:x@127.0.0.3 SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\n"
        "From: <sip:caller@127.0.0.2>;tag=1\n"
        "Contact: <sip:127.0.0.2:5061>\n"
        "Call-ID: abc\n\n"
        "c=IN IP4 127.0.0.2\n",
    )
    assert topology_leaks([message], ["127.0.0.2"]) == [
        "INVITE sip:x@127.0.0.3 SIP/2.0: contact: <sip:127.0.0.2:5061>"
    ]
    assert topology_leaks([message], ["abc"]) == ["INVITE sip:x@127.0.0.3 SIP/2.0: call-id: abc"]


def test_dump_toml_round_trips() -> None:
    config = {
        "log_level": "debug",
        "accept_any_source": True,
        "no_answer_timeout": 1.5,
        "max_call_duration": 2,
        "advance_on": [408, 500, 503],
        "unset": None,
        "route": [
            route("1", sip_uri("127.0.0.3", 5070), sip_uri("127.0.0.4", 5071, "tcp")),
            route('4"4', "sip:127.0.0.5"),
        ],
        "billing": {"enabled": True, "tariff": {"name": "x"}},
    }
    parsed = tomllib.loads(dump_toml(config))
    del config["unset"]
    assert parsed == config
    assert parsed["route"][0]["destinations"][1] == "sip:127.0.0.4:5071;transport=tcp"


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port("127.0.0.2")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.2", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.2", port))
