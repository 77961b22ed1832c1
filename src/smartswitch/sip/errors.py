"""Errors as types that carry the SIP answer they call for (in the manner of h11's ProtocolError)."""

from __future__ import annotations


class SipError(Exception):
    """Base of every error raised by the SIP core."""


class SipParseError(SipError):
    """A message we cannot accept; ``status`` and ``reason`` are what a request gets answered.

    ``partial`` holds whatever could be read of the message (first line and header lines), so that
    a 400 can still carry the Via, From, To, Call-ID and CSeq the sender needs to match it.
    """

    def __init__(self, reason: str, status: int = 400, partial: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
