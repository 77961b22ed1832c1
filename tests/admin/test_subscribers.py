"""Provisioning subscribers, DIDs and the peers' registrar fields (docs/provisioning.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin.provisioning import ProvisioningError, provision_text
from smartswitch.model.config import SupplierRegistration
from smartswitch.sip.digest import compute_ha1
from smartswitch.store.database import create_engine, session_factory
from smartswitch.store.schema import Base
from smartswitch.store.snapshot import load_snapshot

BASE = """
accounts:
  - {name: alice-acct, currency: USD, balance: "10"}
  - {name: provider, currency: USD}
  - {name: corp, currency: USD}
tariffs:
  - name: retail
    rates: [{prefix: "1", price_per_minute: "0.01"}]
peers:
  - name: did-provider
    role: supplier
    account: provider
    address: "203.0.113.9:5060"
    acl: ["203.0.113.9"]
    deliver_dids: true
    register: {username: trunk1, password: "s3cret-trunk", registrar: "203.0.113.9:5070", expires: 600}
  - {name: corp-pbx, role: customer, account: corp, tariff: retail, acl: ["198.51.100.0/24"], address: "198.51.100.5:5060"}
subscribers:
  - username: alice
    password: "correct horse"
    account: alice-acct
    tariff: retail
    allowed_cidrs: ["192.0.2.0/24"]
    max_contacts: 3
    caller_id: "15550001000"
  - {username: bob, password: "battery staple", account: alice-acct}
dids:
  - {number: "15550001000", subscriber: alice}
  - {number: "15550002000", peer: corp-pbx}
"""


def _run(url: str, *texts: str, realm: str = "switch.example") -> Any:
    async def main() -> Any:
        engine = create_engine(url)
        try:
            reports = [
                await provision_text(engine, textwrap.dedent(t), "p.yaml", realm=realm)
                for t in texts
            ]
            async with session_factory(engine)() as session:
                snapshot = await load_snapshot(session)
            return reports, snapshot, await _dump(engine)
        finally:
            await engine.dispose()

    import asyncio

    return asyncio.run(main())


async def _dump(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return repr(
            [list(await conn.execute(select(table))) for table in Base.metadata.sorted_tables]
        )


def test_subscribers_dids_and_registrar_fields(db_url: str) -> None:
    (report,), snap, dump = _run(db_url, BASE)
    assert report.created["subscribers"] == ["alice", "bob"]
    assert report.created["dids"] == ["15550001000", "15550002000"]
    alice = next(s for s in snap.subscribers.values() if s.username == "alice")
    assert alice.realm == "switch.example"
    assert alice.ha1_md5 == compute_ha1("alice", "switch.example", "correct horse", "MD5")
    assert alice.ha1_sha256 == compute_ha1("alice", "switch.example", "correct horse", "SHA-256")
    assert [str(n) for n in alice.allowed_cidrs] == ["192.0.2.0/24"]
    assert (alice.max_contacts, alice.caller_id, alice.tariff_id is not None) == (
        3,
        "15550001000",
        True,
    )
    bob = next(s for s in snap.subscribers.values() if s.username == "bob")
    assert (bob.max_contacts, bob.tariff_id, bob.allowed_cidrs) == (5, None, ())
    # The password is nowhere in the database: only its hashes.
    assert "correct horse" not in dump and "battery staple" not in dump
    did = snap.dids["15550001000"]
    assert did.subscriber_id == alice.id and did.peer_id is None
    corp = next(p for p in snap.peers.values() if p.name == "corp-pbx")
    assert snap.dids["15550002000"].peer_id == corp.id
    provider = next(p for p in snap.peers.values() if p.name == "did-provider")
    assert provider.deliver_dids and not corp.deliver_dids
    assert provider.register == SupplierRegistration(
        "trunk1", "s3cret-trunk", "203.0.113.9:5070", 600
    )
    assert corp.register is None


def test_again_is_unchanged_and_a_password_may_be_left_out_later(db_url: str) -> None:
    later = BASE.replace('    password: "correct horse"\n', "")
    (_first, second, third), snap, _ = _run(db_url, BASE, BASE, later)
    assert not second.changed
    assert sum(map(len, second.unchanged.values())) == 3 + 1 + 2 + 2 + 2  # every entity
    assert not third.changed  # no password: the stored hashes stay
    alice = next(s for s in snap.subscribers.values() if s.username == "alice")
    assert alice.ha1_md5 == compute_ha1("alice", "switch.example", "correct horse", "MD5")


def test_hashes_may_be_given_instead_of_the_password(db_url: str) -> None:
    md5 = compute_ha1("carol", "switch.example", "pw", "MD5")
    sha = compute_ha1("carol", "switch.example", "pw", "SHA-256")
    text = BASE.replace(
        "dids:\n",
        f"  - {{username: carol, ha1_md5: {md5}, ha1_sha256: {sha.upper()}, account: alice-acct}}\ndids:\n",
    )
    _, snap, _ = _run(db_url, text)
    carol = next(s for s in snap.subscribers.values() if s.username == "carol")
    assert (carol.ha1_md5, carol.ha1_sha256) == (md5, sha)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('    password: "correct horse"\n', ""),
            "p.yaml:19: subscribers[0].password: required for a new subscriber",
        ),
        (
            (
                '{number: "15550001000", subscriber: alice}',
                '{number: "15550001000", subscriber: alicia}',
            ),
            "dids[0].subscriber: unknown subscriber 'alicia'",
        ),
        (
            (
                '{number: "15550001000", subscriber: alice}',
                '{number: "15550001000", subscriber: alice, peer: corp-pbx}',
            ),
            "dids[0].subscriber: a DID goes to a subscriber or a peer (one)",
        ),
        (
            ('{number: "15550002000", peer: corp-pbx}', '{number: "15550001000", peer: corp-pbx}'),
            "duplicate DID '15550001000'",
        ),
        (
            ('allowed_cidrs: ["192.0.2.0/24"]', 'allowed_cidrs: ["192.0.2.1/24"]'),
            "p.yaml:23: subscribers[0].allowed_cidrs[0]: not a network",
        ),
        (
            ('    acl: ["203.0.113.9"]\n', ""),
            "peers[0].acl: a peer that delivers DIDs is recognised by its acl",
        ),
        (
            (
                "role: customer, account: corp",
                'role: customer, register: {username: u, password: p, registrar: "1.2.3.4"}, account: corp',
            ),
            "peers[1].register: only a supplier",
        ),
        (
            ('registrar: "203.0.113.9:5070"', 'registrar: "not an address!"'),
            "peers[0].register.registrar",
        ),
        (
            ("{username: bob,", "{username: bob, ha1_md5: abc,"),
            "subscribers[1].ha1_md5: expected 32 hexadecimal digits",
        ),
        (("{username: bob, password", "{username: trunk-user, password"), None),
    ],
)
def test_errors_name_file_line_and_field(
    db_url: str, change: tuple[str, str], message: str | None
) -> None:
    old, new = change
    assert old in BASE
    text = BASE.replace(old, new)
    if message is None:  # a subscriber's name clashing with a peer's digest username
        text = text.replace(
            'acl: ["198.51.100.0/24"]',
            'acl: ["198.51.100.0/24"], username: trunk-user, password: trunk-s3cret-pass',
        )
        message = "subscribers[1].username: username 'trunk-user' is used by peer 'corp-pbx'"
    with pytest.raises(ProvisioningError) as info:
        _run(db_url, text)
    assert message in str(info.value), str(info.value)


def test_password_hashes_follow_the_realm(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    from smartswitch.store.migrate import upgrade

    upgrade(url)
    _, snap, _ = _run(url, BASE, realm="other.example")
    alice = next(s for s in snap.subscribers.values() if s.username == "alice")
    assert alice.realm == "other.example"
    assert alice.ha1_md5 == compute_ha1("alice", "other.example", "correct horse", "MD5")
