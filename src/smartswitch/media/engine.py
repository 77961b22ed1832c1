"""The media relay the B2BUA talks to: a weighted pool of rtpengine instances, sticky by call.

Theory of operation:

- A new call (an ``offer`` for a call-id the pool does not hold) goes to one relay drawn at
  random among those **up**, in proportion to their weights; the call stays on it (every later
  offer, answer, query, recording and the delete) until :meth:`MediaEngine.delete`.
- If that relay does not answer the first offer (:class:`MediaUnavailable`) or is out of
  resources (a 503 :class:`MediaError`), it is marked down and the next one drawn is tried;
  when none is left the offer fails with :class:`MediaUnavailable`. A relay that *refuses the
  SDP* (488) is not retried elsewhere: the next one would refuse it too.
- Each relay is pinged every ``ping_interval`` seconds. One that fails a ping (or any request)
  is down: no new call goes to it. It is up again as soon as it answers a ping.
- A call whose relay is down is not moved: the other relays do not know it. Its requests fail
  with :class:`MediaUnavailable`; :meth:`relay_lost` hands the B2BUA the calls of a relay known
  dead (its rtpengine restarted) so it can end them.

What the caller does with a failure is its choice: every failure is a
:class:`~smartswitch.model.media.MediaFailure` carrying the status to answer (503 when no relay
answers, 488 when the SDP was refused), and nothing of the failed call is kept, so the B2BUA may
just as well pass the SDP through untouched (direct media) instead of answering 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from smartswitch.media.ng import NgClient, NgStats
from smartswitch.model.media import (
    CallRef,
    MediaError,
    MediaFailure,
    MediaOptions,
    MediaStats,
    MediaUnavailable,
)

__all__ = ["MediaEngine", "RelayConfig", "RelayStatus"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """One rtpengine's ng address and its share of new calls (weight 0: no new calls)."""

    name: str
    host: str
    port: int
    weight: int = 1

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"relay {self.name}: weight must be >= 0")


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One relay as the dashboard shows it."""

    name: str
    address: str
    weight: int
    up: bool
    since: float  # wall-clock time of the last change between up and down
    calls: int  # calls the pool holds on it
    last_error: str | None
    requests: int
    timeouts: int
    errors: int


class _Relay:
    def __init__(self, config: RelayConfig, client: NgClient, now: float) -> None:
        self.config = config
        self.client = client
        self.up = False
        self.since = now
        self.last_error: str | None = "not pinged yet"
        self.calls = 0

    @property
    def stats(self) -> NgStats:
        return self.client.stats


class MediaEngine:
    """Offers, answers and deletes calls' media on a pool of rtpengines (module docstring)."""

    def __init__(
        self,
        relays: Sequence[RelayConfig],
        *,
        ping_interval: float = 2.0,
        timeout: float = 0.5,
        tries: int = 3,
        rng: random.Random | None = None,
        on_change: Callable[[RelayStatus], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [relay.name for relay in relays]
        if len(set(names)) != len(names):
            raise ValueError("relay names must be unique")
        self._clock = clock
        self._relays = {
            relay.name: _Relay(
                relay,
                NgClient(relay.host, relay.port, timeout=timeout, tries=tries, name=relay.name),
                clock(),
            )
            for relay in relays
        }
        self._calls: dict[str, _Relay] = {}
        self._rng = rng or random.Random()
        self.ping_interval = ping_interval
        self.on_change = on_change
        self._health: asyncio.Task[None] | None = None

    # Life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Ping every relay once (so the first call finds the live ones), then keep pinging."""
        await self.check()
        if self._health is None:
            self._health = asyncio.create_task(self._ping_forever(), name="media-health")

    async def close(self) -> None:
        task, self._health = self._health, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for relay in self._relays.values():
            relay.client.close()

    async def check(self) -> None:
        """Ping every relay now and mark each up or down."""
        await asyncio.gather(*(self._ping(relay) for relay in self._relays.values()))

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            await self.check()

    async def _ping(self, relay: _Relay) -> None:
        try:
            await relay.client.ping()
        except MediaFailure as exc:
            self._mark(relay, up=False, error=exc.reason)
        else:
            self._mark(relay, up=True)

    def _mark(self, relay: _Relay, *, up: bool, error: str | None = None) -> None:
        if error is not None:
            relay.last_error = error
        if relay.up == up:
            return
        relay.up = up
        relay.since = self._clock()
        if up:
            log.info("media relay %s is up", relay.config.name)
        else:
            log.warning("media relay %s is down: %s", relay.config.name, error)
        if self.on_change is not None:
            self.on_change(self._status(relay))

    # The port --------------------------------------------------------------------------------

    async def offer(self, call: CallRef, sdp: bytes, options: MediaOptions | None = None) -> bytes:
        """The offer rewritten by the call's relay (chosen now for a new call)."""
        if call.call_id in self._calls:  # a re-offer (re-INVITE, UPDATE) stays where it is
            holder = self._relay_of(call.call_id, "offer")
            return await self._on(holder, holder.client.offer(call, sdp, options))
        tried: set[str] = set()
        last: MediaFailure | None = None
        while (relay := self._choose(exclude=tried)) is not None:
            tried.add(relay.config.name)
            try:
                answer = await self._on(relay, relay.client.offer(call, sdp, options))
            except MediaError as exc:
                if exc.status != 503:
                    raise
                last = exc  # out of ports or the like: another relay may have room
                continue
            except MediaUnavailable as exc:
                last = exc
                continue
            self._calls[call.call_id] = relay
            relay.calls += 1
            return answer
        if last is not None:
            raise MediaUnavailable(
                f"no media relay took the call (last: {last})", command="offer"
            ) from last
        raise MediaUnavailable("no media relay is up", command="offer")

    async def answer(self, call: CallRef, sdp: bytes, options: MediaOptions | None = None) -> bytes:
        """The answer rewritten by the relay holding the call."""
        relay = self._relay_of(call.call_id, "answer")
        return await self._on(relay, relay.client.answer(call, sdp, options))

    async def query(self, call_id: str) -> MediaStats:
        """The call's packet counters."""
        relay = self._relay_of(call_id, "query")
        return await self._on(relay, relay.client.query(call_id))

    async def delete(self, call_id: str) -> MediaStats | None:
        """End the call's media; its last counters (None if they could not be read).

        Never fails: the pool forgets the call whatever happens, and a relay that does not
        answer the delete times the call out by itself (``--timeout``, no media for 60 s)."""
        relay = self._calls.pop(call_id, None)
        if relay is None:
            return None
        relay.calls -= 1
        if not relay.up:
            return None  # it cannot answer; it times the call out by itself
        stats: MediaStats | None = None
        # rtpengine's delete answer carries no counters (10.5): query first.
        try:
            stats = await self._on(relay, relay.client.query(call_id))
        except MediaUnavailable:
            return None
        except MediaError:
            pass  # the relay no longer knows the call (timed out): delete is still harmless
        with contextlib.suppress(MediaFailure):
            await self._on(relay, relay.client.delete(call_id))
        return stats

    async def start_recording(self, call_id: str) -> None:
        relay = self._relay_of(call_id, "start recording")
        await self._on(relay, relay.client.start_recording(call_id))

    async def stop_recording(self, call_id: str) -> None:
        relay = self._relay_of(call_id, "stop recording")
        await self._on(relay, relay.client.stop_recording(call_id))

    def relay_lost(self, name: str, reason: str) -> list[str]:
        """The relay ``name`` lost its calls (its rtpengine died): mark it down, forget its
        calls, and return their call-ids for the B2BUA to end."""
        relay = self._relays[name]
        self._mark(relay, up=False, error=reason)
        lost = [call_id for call_id, holder in self._calls.items() if holder is relay]
        for call_id in lost:
            del self._calls[call_id]
        relay.calls = 0
        return lost

    def mark_up(self, name: str) -> None:
        """The relay ``name`` is known to answer again (its rtpengine restarted and answered
        its ready ping): new calls go to it now, not at the next health ping."""
        self._mark(self._relays[name], up=True)

    # State -------------------------------------------------------------------------------------

    def relay_of(self, call_id: str) -> str | None:
        relay = self._calls.get(call_id)
        return relay.config.name if relay is not None else None

    def calls_on(self, name: str) -> list[str]:
        return [call_id for call_id, relay in self._calls.items() if relay.config.name == name]

    def status(self) -> list[RelayStatus]:
        return [self._status(relay) for relay in self._relays.values()]

    def clients(self) -> Iterable[tuple[str, NgClient]]:
        """Each relay's ng client (for its counters on /metrics)."""
        return ((name, relay.client) for name, relay in self._relays.items())

    def _status(self, relay: _Relay) -> RelayStatus:
        stats = relay.stats
        return RelayStatus(
            name=relay.config.name,
            address=f"{relay.config.host}:{relay.config.port}",
            weight=relay.config.weight,
            up=relay.up,
            since=relay.since,
            calls=relay.calls,
            last_error=relay.last_error,
            requests=sum(stats.requests.values()),
            timeouts=sum(stats.timeouts.values()),
            errors=sum(stats.errors.values()),
        )

    # Internals -------------------------------------------------------------------------------

    def _choose(self, exclude: set[str]) -> _Relay | None:
        candidates = [
            relay
            for relay in self._relays.values()
            if relay.up and relay.config.weight > 0 and relay.config.name not in exclude
        ]
        if not candidates:
            return None
        return self._rng.choices(candidates, weights=[r.config.weight for r in candidates])[0]

    def _relay_of(self, call_id: str, command: str) -> _Relay:
        relay = self._calls.get(call_id)
        if relay is None:
            raise MediaError(f"no relay holds call {call_id!r}", command=command)
        if not relay.up:
            raise MediaUnavailable(
                f"the call's relay is down ({relay.last_error})",
                command=command,
                instance=relay.config.name,
            )
        return relay

    async def _on(self, relay: _Relay, request: Awaitable[T]) -> T:
        """Await one request to ``relay``; a relay that did not answer is down from now on."""
        try:
            return await request
        except MediaUnavailable as exc:
            self._mark(relay, up=False, error=exc.reason)
            raise
        except MediaError as exc:
            relay.last_error = exc.reason
            raise
