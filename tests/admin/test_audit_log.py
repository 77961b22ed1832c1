"""The audit log of configuration and balance changes: one entry per entity changed, in the
transaction of the change, with who, from where and the fields before and after; secrets
never in it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin import readers
from smartswitch.admin.audit_log import AuditEntry, AuditFilter, Who, diff, to_csv
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Admin
from smartswitch.admin.provisioning import provision_text
from smartswitch.admin.writer import ConfigInvalid
from smartswitch.store.database import session_factory
from smartswitch.store.schema import ConfigAuditRow
from store.helpers import run_with_engine

DOCUMENT = """
accounts:
  - {name: acme, currency: USD, balance: "10"}
tariffs:
  - {name: retail, rates: [{prefix: "1", price_per_minute: "0.01"}]}
peers:
  - {name: pbx, role: customer, account: acme, tariff: retail, username: pbx1,
     password: "pbx-digest-secret-9"}
  - {name: carrier, role: supplier, account: acme, address: "192.0.2.9",
     register: {username: r1, password: "supplier-given-pw", registrar: "192.0.2.9"}}
routes:
  - {prefix: "1", suppliers: [carrier]}
subscribers:
  - {username: alice, password: "alice-phone-pass-7", account: acme, tariff: retail}
dids:
  - {number: "15550001000", subscriber: alice}
"""
SECRETS = ("pbx-digest-secret-9", "supplier-given-pw", "alice-phone-pass-7")


async def _rows(engine: AsyncEngine) -> list[AuditEntry]:
    async with session_factory(engine)() as session:
        rows = await session.scalars(select(ConfigAuditRow).order_by(ConfigAuditRow.id))
        return [AuditEntry.of(r) for r in rows]


def test_provisioning_leaves_an_entry_per_entity_with_secrets_masked(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[AuditEntry]:
        await provision_text(engine, DOCUMENT, "p.yaml")
        await provision_text(engine, DOCUMENT, "p.yaml")  # the same again: no change, no entry
        return await _rows(engine)

    entries = run_with_engine(db_url, scenario)
    assert [(e.action, e.entity, e.name) for e in entries] == [
        ("create", "account", "acme"),
        ("create", "tariff", "retail"),
        ("create", "peer", "pbx"),
        ("create", "peer", "carrier"),
        ("create", "route", "1"),
        ("create", "subscriber", "alice"),
        ("create", "did", "15550001000"),
    ]
    assert {(e.actor, e.source, e.address) for e in entries} == {
        ("provision", "provision p.yaml", "")
    }
    account, tariff, pbx, carrier, route, alice, did = (e.changes for e in entries)
    assert account["balance"] == [None, "10"] and account["currency"] == [None, "USD"]
    assert tariff == {"currency": [None, "USD"], "rates": [None, 1]}
    assert pbx["password"] == [None, "(new secret)"] and pbx["account"] == [None, "acme"]
    assert carrier["register_password"] == [None, "(new secret)"]
    assert route["suppliers"] == [None, ["carrier 0 1"]]
    assert alice["password"] == [None, "(new secret)"] and "ha1_md5" not in alice
    assert did["subscriber"] == [None, "alice"]
    text = json.dumps([e.changes for e in entries]) + to_csv(entries)
    assert not any(secret in text for secret in SECRETS)


def test_updates_show_before_and_after(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[AuditEntry]:
        await provision_text(engine, DOCUMENT, "p.yaml")
        changed = DOCUMENT.replace(
            'password: "pbx-digest-secret-9"', 'password: "pbx-digest-secret-10"'
        )
        changed = changed.replace(
            'username: alice, password: "alice-phone-pass-7"', "username: alice"
        )
        changed = changed.replace(
            "{username: alice, account: acme", "{username: alice, max_contacts: 2, account: acme"
        )
        await provision_text(engine, changed, "p2.yaml")
        return await _rows(engine)

    entries = run_with_engine(db_url, scenario)
    updates = {(e.entity, e.name): e.changes for e in entries if e.action == "update"}
    assert updates == {
        ("peer", "pbx"): {"password": ["(secret)", "(new secret)"]},
        ("subscriber", "alice"): {"max_contacts": [5, 2]},  # the hashes kept: not a change
    }


def test_deletes_balances_and_settings_name_who_and_where(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[AuditEntry]:
        await provision_text(engine, DOCUMENT, "p.yaml")
        admin = Admin(session_factory(engine), who=Who("ops (token ci)", "api", "198.51.100.7"))
        await admin.change_balance(
            "acme", "topup", {"amount": "2.50", "note": "bank transfer"}, actor="ops", source="api"
        )
        await admin.set_setting("bind_address", "192.0.2.1", source="api")
        await admin.delete_did("15550001000")
        return (await _rows(engine))[7:]

    topup, setting, deleted = run_with_engine(db_url, scenario)
    assert (topup.actor, topup.source, topup.address) == ("ops (token ci)", "api", "198.51.100.7")
    assert (topup.action, topup.entity, topup.name) == ("topup", "account", "acme")
    assert topup.changes["balance"] == ["10.0000", "12.5000"]
    assert topup.changes["amount"] == [None, "2.50"] and topup.changes["note"] == [
        None,
        "bank transfer",
    ]
    assert (setting.action, setting.name, setting.changes) == (
        "create",
        "bind_address",
        {"value": [None, "192.0.2.1"]},
    )
    assert (deleted.action, deleted.entity, deleted.name) == ("delete", "did", "15550001000")
    assert deleted.changes["subscriber"] == ["alice", None]


def test_a_failed_change_leaves_no_entry_nor_does_a_dry_run(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> list[AuditEntry]:
        admin = Admin(session_factory(engine), who=Who("ops", "web", "192.0.2.1"))
        bad = read_form(readers.peer, "web", {"name": "p", "role": "supplier", "account": "x"})
        with pytest.raises(ConfigInvalid):
            await admin.save(bad, source="web", actor="ops")
        await provision_text(engine, DOCUMENT, "p.yaml", dry_run=True)
        return await _rows(engine)

    assert run_with_engine(db_url, scenario) == []


def test_query_filters_and_csv(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> tuple[list[AuditEntry], ...]:
        await provision_text(engine, DOCUMENT, "p.yaml")
        admin = Admin(session_factory(engine))
        return (
            await admin.audit_log(AuditFilter(entity="peer")),
            await admin.audit_log(AuditFilter(name="ali")),
            await admin.audit_log(AuditFilter(actor="nobody")),
        )

    peers, alice, nobody = run_with_engine(db_url, scenario)
    assert [e.name for e in peers] == ["carrier", "pbx"]  # newest first
    assert [e.name for e in alice] == ["alice"] and nobody == []
    lines = to_csv(peers).splitlines()
    assert lines[0] == "at,actor,source,address,action,entity,name,changes"
    assert ",provision,provision p.yaml,,create,peer,carrier," in lines[1]


def test_diff_masks_and_names() -> None:
    names = {"accounts": {1: "acme"}}
    assert diff({"account_id": 1, "password": "a"}, {"account_id": 2, "password": "b"}, names) == {
        "account": ["acme", "#2"],
        "password": ["(secret)", "(new secret)"],
    }
    assert diff({"x": 1}, {"x": 1}) == {}
