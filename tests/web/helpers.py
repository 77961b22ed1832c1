"""Helpers for the web tests."""

from __future__ import annotations

from smartswitch.store.migrate import upgrade


def prepare_schema(url: str) -> None:
    """The schema as a node has it: the project's migrations."""
    upgrade(url)
