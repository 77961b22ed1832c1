"""Cutting a TCP byte stream into SIP messages (RFC 3261 18.3, RFC 5626 3.5.1 keep-alives)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.framing import MAX_BODY, MAX_HEAD, StreamFramer
from smartswitch.sip.message import parse_message

VECTORS = Path(__file__).parent.parent / "vectors"

INVITE = (VECTORS / "good" / "invite_sdp.sip").read_bytes()
OK_200 = (VECTORS / "good" / "response_200_sdp.sip").read_bytes()
OPTIONS = (VECTORS / "good" / "folding_and_case.sip").read_bytes()
BINARY = (VECTORS / "good" / "rfc4475_mpart01.sip").read_bytes()  # CRLFCRLF inside the body


def feed_all(framer: StreamFramer, *chunks: bytes) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def test_one_message() -> None:
    assert StreamFramer().feed(INVITE) == [INVITE]


def test_several_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE + OK_200 + OPTIONS + BINARY) == [INVITE, OK_200, OPTIONS, BINARY]
    assert framer.feed(b"") == []


def test_a_body_containing_an_empty_line_is_framed_by_content_length() -> None:
    messages = StreamFramer().feed(BINARY + INVITE)
    assert messages == [BINARY, INVITE]
    assert parse_message(messages[0], require_content_length=True).body.count(b"\r\n\r\n") >= 2


@pytest.mark.parametrize("message", [INVITE, BINARY], ids=["invite", "binary"])
def test_one_message_split_at_every_point(message: bytes) -> None:
    stream = message + OK_200
    for cut in range(1, len(stream)):
        framer = StreamFramer()
        assert feed_all(framer, stream[:cut], stream[cut:]) == [message, OK_200], cut


def test_a_byte_at_a_time() -> None:
    framer = StreamFramer()
    stream = OPTIONS + INVITE
    out = feed_all(framer, *(stream[i : i + 1] for i in range(len(stream))))
    assert out == [OPTIONS, INVITE]


def test_a_message_waits_for_its_whole_body() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:-1]) == []
    assert framer.feed(INVITE[-1:]) == [INVITE]


def test_crlf_keep_alives_are_skipped() -> None:
    framer = StreamFramer()
    # RFC 5626 3.5.1: a ping is CRLFCRLF, a pong CRLF; either may come between messages.
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + OPTIONS + b"\r\n\r\n" + INVITE + b"\r\n") == [OPTIONS, INVITE]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + OK_200) == [OK_200]


def test_compact_content_length() -> None:
    message = (VECTORS / "good" / "compact_forms.sip").read_bytes()  # "l: 93"
    assert StreamFramer().feed(message + message) == [message, message]


def _with_length_line(line: bytes) -> bytes:
    head, _, _ = OPTIONS.partition(b"\r\n\r\n")
    lines = [x for x in head.split(b"\r\n") if not x.lower().startswith(b"content-length")]
    return b"\r\n".join([*lines, *([line] if line else [])]) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("line", "status", "fault"),
    [
        (b"", 400, "missing Content-Length"),
        (b"Content-Length: five", 400, "bad Content-Length"),
        (b"Content-Length: -1", 400, "bad Content-Length"),
        (b"Content-Length: " + b"9" * 5000, 513, "too large"),
        (f"Content-Length: {MAX_BODY + 1}".encode(), 513, "too large"),
    ],
)
def test_unframeable_streams(line: bytes, status: int, fault: str) -> None:
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(_with_length_line(line))
    assert info.value.status == status
    assert fault in info.value.reason


def test_two_content_lengths_cannot_frame_a_stream() -> None:
    """RFC 4475 3.3.9 (mcl01): which one would frame the next message?"""
    head = _with_length_line(b"Content-Length: 13").replace(
        b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n"
    )
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(head + b"There's no way to know")
    assert "more than one Content-Length" in info.value.reason


def test_a_head_without_end_is_refused_past_the_limit() -> None:
    framer = StreamFramer()
    assert framer.feed(b"INVITE sip:x SIP/2.0\r\nX-Long: " + b"a" * (MAX_HEAD - 100)) == []
    with pytest.raises(SipParseError) as info:
        framer.feed(b"a" * 200)
    assert info.value.status == 513
