"""The location service persisted: write-behind, load at start, expired rows gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smartswitch.registrar.location import (
    RESTORED,
    Binding,
    BindingChange,
    ChangeKind,
    LocationService,
)
from smartswitch.registrar.store import RegistrationStore
from smartswitch.sip.transaction import Address
from smartswitch.store.database import create_engine, session_factory
from smartswitch.store.migrate import upgrade

T0 = 1_700_000_000.0


def _binding(contact: str, expires_at: float, **kw: object) -> Binding:
    values: dict[str, object] = {
        "aor": "alice",
        "contact": contact,
        "expires_at": expires_at,
        "call_id": "c1",
        "cseq": 7,
        "source": Address("tcp", "192.0.2.10", 40001),
        "registered_at": T0,
        "user_agent": "phone/1",
        "q": 0.5,
        "node": "n1",
    }
    values.update(kw)
    return Binding(**values)  # type: ignore[arg-type]


def test_changes_are_written_behind_and_read_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    upgrade(url)

    async def main() -> None:
        engine = create_engine(url)
        try:
            sessions = session_factory(engine)
            store = RegistrationStore(sessions, "n1")
            location = LocationService()
            location.listeners.append(store.on_change)
            kept = _binding("sip:alice@10.0.0.1", T0 + 600)
            location.apply(kept)
            location.apply(_binding("sip:alice@10.0.0.2", T0 + 600))
            location.apply(_binding("sip:alice@10.0.0.3", T0 + 30))
            for n in range(5):  # refreshes: one row, the latest state
                location.apply(_binding("sip:alice@10.0.0.1", T0 + 600 + n, cseq=8 + n))
            location.remove("alice", _binding("sip:alice@10.0.0.2", 0).key)
            assert store.backlog == 3
            assert await store.flush()
            assert store.backlog == 0 and store.stats["written"] == 2

            # Another node's rows are its own.
            other = RegistrationStore(sessions, "n2")
            other.on_change(BindingChange(ChangeKind.SET, kept, "local"))
            await other.flush()

            # A restart 60 s later: the short binding has expired and is gone for good.
            restored = await RegistrationStore(sessions, "n1").load(T0 + 60)
            assert [(b.contact, b.expires_at, b.cseq) for b in restored] == [
                ("sip:alice@10.0.0.1", T0 + 604, 12)
            ]
            b = restored[0]
            assert (b.source, b.user_agent, b.q, b.node) == (kept.source, "phone/1", 0.5, "n1")
            fresh = LocationService()
            fresh.apply(b, RESTORED)
            assert fresh.lookup("alice", T0 + 60) == [b]
            assert len(await RegistrationStore(sessions, "n1").load(T0 + 60)) == 1
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_database_that_refuses_keeps_the_changes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'late.db'}"

    async def main() -> None:
        engine = create_engine(url)
        try:
            store = RegistrationStore(session_factory(engine), "n1")
            location = LocationService()
            location.listeners.append(store.on_change)
            location.apply(_binding("sip:alice@10.0.0.1", T0 + 600))
            assert not await store.flush()  # no table yet
            assert store.backlog == 1
            location.apply(_binding("sip:alice@10.0.0.1", T0 + 900, cseq=9))  # newer wins
            await asyncio.to_thread(upgrade, url)
            assert await store.flush()
            [row] = await store.load(T0)
            assert (row.expires_at, row.cseq) == (T0 + 900, 9)
        finally:
            await engine.dispose()

    asyncio.run(main())
