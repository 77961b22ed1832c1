"""Stopping a background task without losing the caller's own cancellation.

``task.cancel()`` then ``with suppress(CancelledError): await task`` also swallows a
cancellation aimed at the *caller* while it waits, and ``asyncio.wait_for`` (Python 3.11) can
drop a cancellation when its inner awaitable finishes in the same loop turn: either way a
``stop()`` waits for ever on a task that goes on running. Use :func:`cancel_and_wait` and
``asyncio.timeout()`` instead.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished; re-raise if we are cancelled too."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
