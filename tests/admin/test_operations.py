"""The admin operations tell their caller after every committed change, and only then."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Admin, Conflict, NotFound
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.store.database import session_factory
from store.helpers import run_with_engine


def test_on_change_runs_after_each_committed_change(db_url: str) -> None:
    calls: list[str] = []

    async def scenario(engine: AsyncEngine) -> None:
        admin = Admin(session_factory(engine), on_change=lambda: calls.append("changed"))

        async def expect(n: int) -> None:
            assert len(calls) == n
            calls.clear()

        account = read_form(readers.account, "api", {"name": "a", "currency": "USD"})
        await admin.save(account, source="api", actor="t")
        await expect(1)
        await admin.save(account, source="api", actor="t")  # the same again: no change
        await expect(0)
        with pytest.raises(Conflict):
            await admin.save(account, source="api", actor="t", create_only=True)
        await expect(0)
        peer = read_form(readers.peer, "api", {"name": "p", "role": "supplier", "account": "x"})
        with pytest.raises(ConfigInvalid):  # no address, unknown account: nothing written
            await admin.save(peer, source="api", actor="t")
        await expect(0)
        await admin.change_balance(
            "a", "topup", {"amount": "5", "note": "x"}, actor="t", source="api"
        )
        await expect(1)
        await admin.set_setting("bind_address", "", source="api")
        await expect(1)
        tariff = read_form(readers.tariff, "api", {"name": "t"})
        await admin.save(tariff, source="api", actor="t")
        await expect(1)
        await admin.delete_tariff("t")
        await expect(1)
        with pytest.raises(NotFound):
            await admin.delete_tariff("t")
        await expect(0)

    run_with_engine(db_url, scenario)
