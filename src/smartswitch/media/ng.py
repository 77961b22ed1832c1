"""An asyncio client of rtpengine's ng control protocol over UDP.

Theory of operation (rtpengine docs/ng_control_protocol.md): a request is one datagram, a
cookie, one space, and a bencoded dictionary with at least ``command``; the answer carries the
same cookie and a dictionary with ``result`` ("ok", "pong" or "error" with ``error-reason``, or
"ok" with a ``warning``). rtpengine remembers recent cookies and answers a retransmitted request
from its cache without doing the work twice, so a retransmission must repeat the very same
cookie and bytes; and a new client must never reuse the cookies of an old one (a restarted
node would get the cached answers of its predecessor): every client draws a random prefix.

A request is sent up to ``tries`` times, ``timeout`` seconds apart; when no answer came by then
it fails with :class:`MediaUnavailable` after at most ``tries * timeout`` seconds. Answers that
come late (after their request gave up) or with an unknown cookie are dropped and counted.

What rtpengine 10.5 does, as checked against the daemon (tests/media/test_ng.py):

- unknown dictionary keys and unknown flags (``symmetric`` among them, although the
  documentation lists it) are logged by the daemon and otherwise ignored: ``result`` is "ok";
- a codec list given as a string instead of a list (``strip: "PCMU"``) is ignored silently;
- ``delete`` answers without the call's statistics, whatever its flags: ``query`` first;
- ``delete`` of an unknown call is "ok" with a warning; ``answer``/``query`` of an unknown call
  are errors ("Unknown call-id").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from smartswitch.media import bencode
from smartswitch.media.bencode import Value
from smartswitch.model.media import (
    CallRef,
    MediaError,
    MediaOptions,
    MediaStats,
    MediaUnavailable,
    PacketCounters,
    TagStats,
)

__all__ = [
    "MAX_DATAGRAM",
    "NgClient",
    "NgStats",
    "options_to_ng",
    "parse_stats",
]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4


@dataclass(slots=True)
class NgStats:
    """Counters of one client, by command, for /metrics (monotonic, never reset)."""

    requests: Counter[str] = field(default_factory=Counter)
    retransmissions: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # answered "result: error"
    warnings: Counter[str] = field(default_factory=Counter)  # answered "ok" with a warning
    stray_replies: int = 0  # late, unknown cookie, or undecodable

    def samples(self) -> Iterator[tuple[str, str, int]]:
        """``(counter, command, value)`` for every non-zero counter, in a stable order."""
        for name in ("requests", "retransmissions", "timeouts", "errors", "warnings"):
            counts: Counter[str] = getattr(self, name)
            for command in sorted(counts):
                yield name, command, counts[command]
        if self.stray_replies:
            yield "stray_replies", "", self.stray_replies


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.client._received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected socket: nothing listens (yet). The request
        # keeps retransmitting until its tries are spent; a restarting rtpengine may answer.
        log.debug("ng %s: %s", self.client.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost()


class NgClient:
    """One rtpengine's ng port, over one UDP socket (opened on first use).

    ``timeout`` is the wait for an answer before a retransmission, ``tries`` the number of sends
    before :class:`MediaUnavailable`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 0.5,
        tries: int = 3,
        name: str = "",
    ) -> None:
        if tries < 1 or timeout <= 0:
            raise ValueError("NgClient needs tries >= 1 and timeout > 0")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tries = tries
        self.name = name or f"{host}:{port}"
        self.stats = NgStats()
        self._prefix = secrets.token_hex(6)
        self._sequence = 0
        self._pending: dict[bytes, asyncio.Future[dict[str, Value]]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Lock | None = None

    async def open(self) -> None:
        """Open the socket (``request`` does it on first use)."""
        if self._transport is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._transport is None:
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), remote_addr=(self.host, self.port)
                )
                self._transport = transport

    def close(self) -> None:
        """Close the socket; requests still waiting fail with :class:`MediaUnavailable`."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._fail_pending("client closed")

    async def request(
        self, command: str, params: Mapping[str, Value] | None = None
    ) -> dict[str, Value]:
        """Send ``command`` with ``params``; the answer's dictionary when ``result`` is not error.

        Raises :class:`MediaUnavailable` when no answer came after ``tries`` sends, and
        :class:`MediaError` (rtpengine's ``error-reason``) when the answer is an error.
        """
        await self.open()
        assert self._transport is not None
        self._sequence += 1
        cookie = f"{self._prefix}_{self._sequence}".encode()
        payload = cookie + b" " + bencode.encode({**(params or {}), "command": command})
        if len(payload) > MAX_DATAGRAM:
            raise MediaError(
                f"request of {len(payload)} bytes does not fit in a datagram",
                command=command,
                instance=self.name,
            )
        future: asyncio.Future[dict[str, Value]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        self.stats.requests[command] += 1
        try:
            for attempt in range(self.tries):
                if self._transport is None:
                    break
                if attempt:
                    self.stats.retransmissions[command] += 1
                self._transport.sendto(payload)
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), self.timeout)
                except TimeoutError:
                    continue
                return self._checked(command, reply)
        finally:
            self._pending.pop(cookie, None)
            if not future.done():
                future.cancel()
        self.stats.timeouts[command] += 1
        raise MediaUnavailable(
            f"no answer after {self.tries} tries {self.timeout:g} s apart",
            command=command,
            instance=self.name,
        )

    def _checked(self, command: str, reply: dict[str, Value]) -> dict[str, Value]:
        result = reply.get("result")
        if result == "error":
            self.stats.errors[command] += 1
            reason = reply.get("error-reason")
            raise MediaError(
                reason if isinstance(reason, str) else "error without a reason",
                command=command,
                instance=self.name,
            )
        if result not in ("ok", "pong"):
            self.stats.errors[command] += 1
            raise MediaError(f"unexpected result {result!r}", command=command, instance=self.name)
        if "warning" in reply:
            self.stats.warnings[command] += 1
            log.debug("ng %s: %s: warning %r", self.name, command, reply["warning"])
        return reply

    def _received(self, data: bytes) -> None:
        cookie, space, body = data.partition(b" ")
        future = self._pending.get(cookie) if space else None
        if future is None or future.done():
            self.stats.stray_replies += 1
            return
        try:
            reply = bencode.decode(body)
        except bencode.BencodeError as exc:
            self.stats.stray_replies += 1
            log.warning("ng %s: undecodable answer: %s", self.name, exc)
            return
        if not isinstance(reply, dict):
            self.stats.stray_replies += 1
            return
        future.set_result(reply)

    def _lost(self) -> None:
        self._transport = None
        self._fail_pending("socket closed")

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MediaUnavailable(reason, instance=self.name))
        self._pending.clear()

    # ----------------------------------------------------------------------------------------
    # Commands

    async def ping(self) -> None:
        """rtpengine answers ``pong``; anything else is a :class:`MediaError`."""
        reply = await self.request("ping")
        if reply.get("result") != "pong":
            raise MediaError(f"ping answered {reply.get('result')!r}", command="ping")

    async def offer(
        self, call: CallRef, sdp: bytes | str, options: MediaOptions | None = None
    ) -> bytes:
        """The SDP to send on, rewritten by the relay; ``call.to_tag`` is not used."""
        params: dict[str, Value] = {
            "call-id": call.call_id,
            "from-tag": call.from_tag,
            "sdp": sdp,
            **options_to_ng(options or MediaOptions()),
        }
        return _sdp_of(await self.request("offer", params), "offer", self.name)

    async def answer(
        self, call: CallRef, sdp: bytes | str, options: MediaOptions | None = None
    ) -> bytes:
        """The answer SDP, rewritten; ``call.to_tag`` names the answering side."""
        if call.to_tag is None:
            raise ValueError("an answer needs the call's to_tag")
        params: dict[str, Value] = {
            "call-id": call.call_id,
            "from-tag": call.from_tag,
            "to-tag": call.to_tag,
            "sdp": sdp,
            **options_to_ng(options or MediaOptions(), answer=True),
        }
        return _sdp_of(await self.request("answer", params), "answer", self.name)

    async def delete(self, call_id: str) -> bool:
        """Remove the whole call now (``delete-delay: 0``); False if the relay did not know it.

        rtpengine otherwise keeps a deleted call 30 s. Its answer carries no statistics
        (10.5): :meth:`query` first for the final counters.
        """
        reply = await self.request("delete", {"call-id": call_id, "delete-delay": 0})
        return "warning" not in reply

    async def query(self, call_id: str) -> MediaStats:
        """The call's packet counters (:class:`MediaError` "Unknown call-id" if there is none)."""
        return parse_stats(await self.request("query", {"call-id": call_id}))

    async def list_calls(self, limit: int = 32) -> list[str]:
        """Call-ids the relay holds, at most ``limit`` (a big list may not fit a datagram)."""
        reply = await self.request("list", {"limit": limit})
        calls = reply.get("calls")
        if not isinstance(calls, list):
            return []
        return [item for item in calls if isinstance(item, str)]

    async def start_recording(self, call_id: str) -> None:
        await self.request("start recording", {"call-id": call_id})

    async def stop_recording(self, call_id: str) -> None:
        await self.request("stop recording", {"call-id": call_id})


def _sdp_of(reply: Mapping[str, Value], command: str, instance: str) -> bytes:
    sdp = reply.get("sdp")
    if not isinstance(sdp, str):
        raise MediaError("answer without an SDP", command=command, instance=instance)
    return sdp.encode("utf-8", "surrogateescape")


def options_to_ng(options: MediaOptions, *, answer: bool = False) -> dict[str, Value]:
    """The ng dictionary entries for ``options``, spelt as rtpengine 10.5 understands them.

    ``direction`` is left out of answers (the relay remembers it from the offer). Codec
    manipulation applies to offers only (rtpengine ignores it in answers) but is passed anyway:
    the answer to a re-INVITE sent by the callee is an offer from the other side.
    """
    entries: dict[str, Value] = {}
    flags: list[Value] = list(options.flags)
    if options.replace:
        entries["replace"] = list(options.replace)
    if options.ice is not None:
        entries["ICE"] = options.ice
    if options.direction is not None and not answer:
        entries["direction"] = list(options.direction)
    codec: dict[str, Value] = {}
    if options.codec_strip:
        codec["strip"] = list(options.codec_strip)
    if options.codec_except:
        codec["except"] = list(options.codec_except)
    if options.codec_mask:
        codec["mask"] = list(options.codec_mask)
    if codec:
        entries["codec"] = codec
    if options.record_call:
        entries["record-call"] = "yes"
    if options.received_from is not None:
        family = "IP6" if ":" in options.received_from else "IP4"
        entries["received-from"] = [family, options.received_from]
    if options.sip_source_address:
        flags.append("SIP-source-address")
    if options.strict_source:
        flags.append("strict-source")
    if options.label is not None:
        entries["label"] = options.label
    if flags:
        entries["flags"] = flags
    return entries


def parse_stats(reply: Mapping[str, Value]) -> MediaStats:
    """A ``query`` answer as :class:`MediaStats` (missing or odd parts count as zero)."""
    totals = _dict(reply.get("totals"))
    tags: list[TagStats] = []
    for key, value in _dict(reply.get("tags")).items():
        entry = _dict(value)
        rtp = [0, 0, 0]
        rtcp = [0, 0, 0]
        codec: str | None = None
        last_packet: int | None = None
        for media in _list(entry.get("medias")):
            media_dict = _dict(media)
            if codec is None and isinstance(media_dict.get("codec"), str):
                codec = str(media_dict["codec"])
            for stream in _list(media_dict.get("streams")):
                stream_dict = _dict(stream)
                flags = _list(stream_dict.get("flags"))
                counters = _counters(stream_dict.get("stats"))
                into = rtcp if "RTCP" in flags and "RTP" not in flags else rtp
                into[0] += counters.packets
                into[1] += counters.bytes
                into[2] += counters.errors
                seen = stream_dict.get("last packet")
                if isinstance(seen, int) and counters.packets:
                    last_packet = max(last_packet or 0, seen)
        label = entry.get("label")
        tags.append(
            TagStats(
                tag=key,
                label=label if isinstance(label, str) else None,
                rtp=PacketCounters(*rtp),
                rtcp=PacketCounters(*rtcp),
                codec=codec,
                last_packet=last_packet,
            )
        )
    created = reply.get("created")
    last_signal = reply.get("last signal")
    return MediaStats(
        created=created if isinstance(created, int) else None,
        last_signal=last_signal if isinstance(last_signal, int) else None,
        rtp=_counters(totals.get("RTP")),
        rtcp=_counters(totals.get("RTCP")),
        tags=tuple(tags),
    )


def _dict(value: Value | None) -> dict[str, Value]:
    return value if isinstance(value, dict) else {}


def _list(value: Value | None) -> list[Value]:
    return value if isinstance(value, list) else []


def _counters(value: Value | None) -> PacketCounters:
    stats = _dict(value)
    numbers = [stats.get(key) for key in ("packets", "bytes", "errors")]
    return PacketCounters(*(number if isinstance(number, int) else 0 for number in numbers))
