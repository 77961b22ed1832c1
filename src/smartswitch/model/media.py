"""What the call path and the media relay tell each other: options, counters, failures.

The B2BUA asks for media through a port it owns (``b2bua.ports``); the relay (``media/``, over
rtpengine) answers. Both sides import these values from here, at the bottom of the layers, so
neither depends on the other.

Failures are types that carry the SIP status a caller would answer with, in the manner of
``sip.errors``, but the B2BUA decides: a relay that does not answer (:class:`MediaUnavailable`)
may be a 503 or a reason to fall back to direct media (the SDP passed through untouched), per
the node's media policy; a relay that refuses the SDP (:class:`MediaError`) usually means the
offer itself is unusable (488).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "DIRECT",
    "CallRef",
    "MediaError",
    "MediaFailure",
    "MediaMode",
    "MediaOptions",
    "MediaSettings",
    "MediaStats",
    "MediaUnavailable",
    "PacketCounters",
    "TagStats",
]


class MediaMode(enum.StrEnum):
    DIRECT = "direct"  # the SDP passes untouched: media flows between the parties
    RELAY = "relay"  # offer/answer through rtpengine: media flows through the node


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """A peer's media settings, and (combined for both parties, :meth:`combine`) a call's.

    ``codecs`` empty: whatever the parties offer; else only these (rtpengine's strip of every
    other codec, so a peer allowed only PCMA never sees G.729). Codec filtering and recording
    need the relay: they are ignored in direct mode, where the SDP is never touched.
    ``fallback``: when no relay answers, pass the SDP through untouched (direct) instead of
    refusing the call with 503.
    """

    mode: MediaMode = MediaMode.DIRECT
    codecs: tuple[str, ...] = ()
    record: bool = False
    fallback: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.codecs, str):
            raise TypeError("MediaSettings.codecs is a tuple of codec names")

    @property
    def relay(self) -> bool:
        return self.mode is MediaMode.RELAY

    def recorded(self, record: bool = True) -> MediaSettings:
        """These settings, recorded as well when ``record`` (an account that records its
        calls: in relay mode only, as for a peer's recording)."""
        return MediaSettings(self.mode, self.codecs, True, self.fallback) if record else self

    def combine(self, other: MediaSettings) -> MediaSettings:
        """The call's settings between a party with these and one with ``other``: relayed if
        either wants it, only the codecs both allow, recorded if either asks, and falling back
        to direct media only if every party that asked for the relay allows it."""
        if self == other:
            return self
        if self.codecs and other.codecs:
            wanted = {c.upper() for c in other.codecs}
            codecs = tuple(c for c in self.codecs if c.upper() in wanted)
            if not codecs:
                codecs = other.codecs  # none in common: the one receiving the offer decides
        else:
            codecs = self.codecs or other.codecs
        relays = [s for s in (self, other) if s.relay]
        return MediaSettings(
            mode=MediaMode.RELAY if relays else MediaMode.DIRECT,
            codecs=codecs,
            record=self.record or other.record,
            fallback=all(s.fallback for s in relays) if relays else True,
        )


DIRECT = MediaSettings()
"""The default: direct media, the SDP untouched."""


@dataclass(frozen=True, slots=True)
class CallRef:
    """One relayed call as rtpengine knows it: a call-id and the tags of its two sides.

    A B2BUA has two dialogs with their own Call-IDs; to the relay it is one call, named by the
    B2BUA (usually the A leg's Call-ID, the caller's From tag, and a tag for the callee side).
    ``to_tag`` is known from the answer on.
    """

    call_id: str
    from_tag: str
    to_tag: str | None = None

    def answered_by(self, to_tag: str) -> CallRef:
        return CallRef(self.call_id, self.from_tag, to_tag)


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How the relay should rewrite one SDP (an ``offer`` or ``answer``).

    Each field is one documented ng option (docs/ng_control_protocol.md in rtpengine); what
    rtpengine 10.5 does with it was checked against the real daemon (tests/media).
    """

    replace: tuple[str, ...] = ("origin",)
    """Parts of the SDP to rewrite besides the media addresses: "origin" (o= address),
    "session-connection" (the session-level c=; rewritten anyway by 10.5), "SDP-version"."""

    ice: str | None = "remove"
    """"remove" strips ICE (what SIP trunks want); "force" makes the relay the only
    candidate (WebRTC); None leaves rtpengine's default (ICE out only if ICE came in)."""

    direction: tuple[str, str] | None = None
    """Logical interfaces (``--interface=NAME/IP``) of the sender and of the recipient of this
    SDP, for a relay between networks; only needed in the first offer."""

    codec_strip: tuple[str, ...] = ()
    """Codecs removed from the rewritten SDP ("all" for every one of them)."""

    codec_except: tuple[str, ...] = ()
    """Codecs kept whatever ``codec_strip`` says (``strip=("all",)`` + ``except=("PCMA",)``)."""

    codec_mask: tuple[str, ...] = ()
    """Codecs hidden from the recipient but still accepted from the sender (for transcoding)."""

    record_call: bool = False
    """Record the call (pcap in ``--recording-dir``) from its first packet."""

    received_from: str | None = None
    """The SIP source address of the message carrying this SDP. Given for a phone behind NAT
    together with ``sip_source_address``: the relay then sends media to the address the
    packets really come from rather than the private one written in the SDP."""

    sip_source_address: bool = False
    """Ignore the addresses in the SDP; use ``received_from`` (or learn from the packets)."""

    strict_source: bool = False
    """After learning an endpoint, drop packets from any other source (anti-hijack)."""

    flags: tuple[str, ...] = ()
    """Further ng flags, spelt as in the documentation (e.g. "port-latching", "NAT-wait").
    rtpengine 10.5 only logs a flag it does not know (``symmetric`` among them) and goes on."""

    label: str | None = None
    """A free-form label for the sender of this SDP, reported back by ``query``."""

    def __post_init__(self) -> None:
        for name in ("replace", "codec_strip", "codec_except", "codec_mask", "flags"):
            value = getattr(self, name)
            # A string where rtpengine wants a list is silently ignored by the daemon: refuse it.
            if isinstance(value, str):
                raise TypeError(f"MediaOptions.{name} is a tuple of strings, not {value!r}")
        if self.sip_source_address and self.received_from is None:
            raise ValueError("sip_source_address needs received_from (the SIP source address)")


@dataclass(frozen=True, slots=True)
class PacketCounters:
    packets: int = 0
    bytes: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class TagStats:
    """What the relay received from one side of the call (one SIP tag)."""

    tag: str
    label: str | None
    rtp: PacketCounters
    rtcp: PacketCounters
    codec: str | None  # e.g. "PCMA/8000", as rtpengine names the codec in use
    last_packet: int | None  # UNIX time of the last packet received from this side


@dataclass(frozen=True, slots=True)
class MediaStats:
    """A call's packet counters at the relay (the ``query`` answer, summed and per side)."""

    created: int | None
    last_signal: int | None
    rtp: PacketCounters
    rtcp: PacketCounters
    tags: tuple[TagStats, ...] = field(default=())

    def received_from(self, tag: str) -> TagStats | None:
        return next((item for item in self.tags if item.tag == tag), None)


class MediaFailure(Exception):
    """Base of the relay's failures; ``status`` is the SIP answer a caller would give."""

    status = 500

    def __init__(self, reason: str, *, command: str = "", instance: str = "") -> None:
        super().__init__(f"{instance or 'media'}: {command or 'request'}: {reason}")
        self.reason = reason
        self.command = command
        self.instance = instance


class MediaUnavailable(MediaFailure):
    """No relay answered (none configured up, or every try timed out)."""

    status = 503


class MediaError(MediaFailure):
    """The relay answered ``result: error``; ``reason`` is its ``error-reason``.

    ``status`` is 488 when the relay could not take the SDP ("Failed to parse SDP",
    "Incomplete SDP specification"), 503 when it ran out of resources ("Ran out of ports"),
    and 500 otherwise (e.g. "Unknown call-id" on an answer).
    """

    def __init__(self, reason: str, *, command: str = "", instance: str = "") -> None:
        super().__init__(reason, command=command, instance=instance)
        lowered = reason.lower()
        if "sdp" in lowered:
            self.status = 488
        elif "port" in lowered or "out of" in lowered:
            self.status = 503
        else:
            self.status = 500
