"""Cutting a byte stream (TCP, TLS) into SIP messages by Content-Length (RFC 3261 18.3).

On a stream Content-Length is the only framing there is, so it is mandatory; CRLF keep-alives
(RFC 5626 3.5.1) between messages are skipped.
"""

from __future__ import annotations

from smartswitch.sip.errors import SipParseError

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class StreamFramer:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available.

        Raises :class:`SipParseError` when the stream cannot be framed (no or bad Content-Length,
        an oversized head): the connection cannot be trusted past that point and should close.
        """
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs between messages.
            start = 0
            while start < len(buf) and buf[start] in (13, 10):
                start += 1
            if start:
                del buf[:start]
            if not buf:
                return out
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise SipParseError("message head too large", 513)
                return out
            length = _content_length(bytes(buf[:end]))
            total = end + 4 + length
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]


def _content_length(head: bytes) -> int:
    length: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            if length is not None:
                # Which one frames the stream? Guessing would desynchronise it (RFC 4475 3.3.9).
                raise SipParseError("more than one Content-Length on a stream transport")
            text = value.strip()
            if not text.isdigit():
                raise SipParseError("bad Content-Length on a stream transport")
            # Bounded before int(): int() refuses more than 4300 digits with a ValueError.
            if len(text) > 10 or int(text) > MAX_BODY:
                raise SipParseError("body too large", 513)
            length = int(text)
    if length is None:
        raise SipParseError("missing Content-Length on a stream transport")
    return length
