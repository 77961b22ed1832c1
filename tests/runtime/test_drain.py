"""The drain's steps in order, on a stand-in node: refuse, wait for the calls (or end them at
the deadline), flush the outbox (or give up after the flush time), stop."""

from __future__ import annotations

import asyncio

from smartswitch.runtime.drain import Drainer, DrainTarget


class Node:
    def __init__(self, calls: int, outbox: int, *, calls_end: bool = True) -> None:
        self.calls = calls
        self.outbox = outbox
        self.calls_end = calls_end  # whether ending them works
        self.events: list[str] = []
        self.stopped = asyncio.Event()

    def target(self) -> DrainTarget:
        async def flush() -> None:
            self.events.append("flush")

        def end_calls() -> None:
            self.events.append(f"end {self.calls}")
            if self.calls_end:
                self.calls = 0

        def stop() -> None:
            self.events.append("stop")
            self.stopped.set()

        return DrainTarget(
            refuse_calls=lambda retry: self.events.append(f"refuse {retry}"),
            calls=lambda: self.calls,
            end_calls=end_calls,
            outbox_depth=lambda: self.outbox,
            flush_appends=flush,
            stop=stop,
        )


def _drain(node: Node, **kw: float) -> Drainer:
    loop = asyncio.get_running_loop()
    drainer = Drainer(
        node.target(),
        loop.time,
        deadline=kw.get("deadline", 5.0),
        retry_after=int(kw.get("retry_after", 60)),
        flush_timeout=kw.get("flush_timeout", 5.0),
    )
    drainer.start()
    return drainer


def test_calls_that_end_by_themselves_then_the_outbox_then_stop() -> None:
    async def scenario() -> list[str]:
        node = Node(calls=2, outbox=0)
        drainer = _drain(node)
        assert drainer.status().phase == "draining"
        await asyncio.sleep(0.3)
        assert not node.stopped.is_set()  # calls still up
        node.calls, node.outbox = 0, 3  # they ended; their CDRs are on their way
        await asyncio.sleep(0.5)
        assert drainer.status().phase == "flushing"
        node.outbox = 0
        await asyncio.wait_for(node.stopped.wait(), 2)
        status = drainer.status()
        assert (status.phase, status.calls_ended_at_deadline) == ("drained", 0)
        return node.events

    assert asyncio.run(scenario()) == ["refuse 60", "flush", "stop"]


def test_the_deadline_ends_the_calls_and_a_stuck_outbox_does_not_hold_the_stop() -> None:
    async def scenario() -> tuple[list[str], int]:
        node = Node(calls=3, outbox=4)
        drainer = _drain(node, deadline=0.3, flush_timeout=0.3, retry_after=5)
        await asyncio.wait_for(node.stopped.wait(), 3)
        status = drainer.status()
        assert status.outbox_depth == 4  # kept on disk for the next start
        return node.events, status.calls_ended_at_deadline

    events, ended = asyncio.run(scenario())
    assert events == ["refuse 5", "end 3", "flush", "stop"]
    assert ended == 3
