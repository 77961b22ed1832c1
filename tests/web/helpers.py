"""Helpers for the web tests."""

from __future__ import annotations

import sqlite3
from typing import Any

from smartswitch.store.migrate import upgrade


def prepare_schema(url: str) -> None:
    """The schema as a node has it: the project's migrations."""
    upgrade(url)


def stored_row(url: str, query: str) -> tuple[Any, ...]:
    """The one row ``query`` finds in the test's SQLite database, read behind the app."""
    db = sqlite3.connect(url.split("///", 1)[1])
    try:
        row: tuple[Any, ...] = db.execute(query).fetchone()
        return row
    finally:
        db.close()
