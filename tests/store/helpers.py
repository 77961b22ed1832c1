"""Helpers shared by the store tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.store.database import create_engine

T = TypeVar("T")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provision.yaml"


def run_with_engine(url: str, fn: Callable[[AsyncEngine], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(engine)`` in a new event loop and dispose of the engine afterwards."""

    async def main() -> T:
        engine = create_engine(url)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())
