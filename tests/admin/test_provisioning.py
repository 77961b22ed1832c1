"""Provisioning from YAML: idempotent upserts, exact numbers, and errors that point at the
file, line and field while leaving the database untouched."""

from __future__ import annotations

import ipaddress
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin.provisioning import (
    ProvisioningError,
    ProvisionReport,
    provision,
    provision_text,
)
from smartswitch.model.capture import capture_settings
from smartswitch.model.config import (
    AclEntry,
    ConfigSnapshot,
    PeerRole,
    ProfitControl,
    Rate,
    RewriteRule,
    RouteStrategy,
    RouteSupplier,
)
from smartswitch.model.increment import Increment
from smartswitch.store.database import session_factory
from smartswitch.store.schema import BalanceChangeKind, BalanceChangeRow, Base
from smartswitch.store.snapshot import config_version, load_snapshot
from store.helpers import EXAMPLE, run_with_engine


async def _snapshot(engine: AsyncEngine) -> ConfigSnapshot:
    async with session_factory(engine)() as session:
        return await load_snapshot(session)


async def _dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for "nothing changed" checks."""
    async with engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in await conn.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


def _write(tmp_path: Path, text: str, name: str = "provision.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_example_twice_is_idempotent(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        first = await provision(engine, EXAMPLE)
        assert first.changed and first.config_version == 1
        assert first.created == {
            "accounts": ["acme", "carrier-a", "carrier-b"],
            "tariffs": ["retail", "buy-a", "buy-b"],
            "peers": ["acme-trunk", "carrier-a", "carrier-b"],
            "routes": ["(default)"],
            "subscribers": [],
            "dids": [],
            "settings": [],
        }
        before = await _dump(engine)
        second = await provision(engine, EXAMPLE)
        assert not second.changed
        assert second.config_version == 1  # nothing changed: nodes need not reload
        assert sum(map(len, second.unchanged.values())) == 10
        assert await _dump(engine) == before  # same rows, same ids
        assert "no changes" in second.summary()

    run_with_engine(db_url, scenario)


def test_snapshot_of_the_example(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> ConfigSnapshot:
        await provision(engine, EXAMPLE)
        return await _snapshot(engine)

    snap = run_with_engine(db_url, scenario)
    assert snap.version == 1
    accounts = {a.name: a for a in snap.accounts.values()}
    assert accounts["acme"].balance == Decimal("100.00")
    assert accounts["acme"].credit_limit == 0 and accounts["acme"].prepaid
    assert accounts["acme"].reserve_seconds is None  # the node's setting
    assert not accounts["acme"].record  # the peers decide
    assert accounts["acme"].currency == "USD"
    tariffs = {t.name: t for t in snap.tariffs.values()}
    assert tariffs["retail"].rates == (
        Rate("1", Decimal("0.01"), Decimal(0), Increment(60, 60)),
        Rate("44", Decimal("0.02"), Decimal("0.005"), Increment(1, 1)),
    )
    assert tariffs["buy-b"].rates[0].price_per_minute == Decimal("0.004")
    peers = {p.name: p for p in snap.peers.values()}
    trunk = peers["acme-trunk"]
    assert trunk.role is PeerRole.CUSTOMER and trunk.is_customer and not trunk.is_supplier
    assert trunk.account_id == accounts["acme"].id
    assert trunk.tariff_id == tariffs["retail"].id
    assert trunk.acl == (AclEntry(ipaddress.ip_network("127.0.0.2/32"), None),)
    assert trunk.max_calls == 500 and trunk.max_cps is None
    assert trunk.profit_control is ProfitControl.ALLOW_LOSS and trunk.enabled
    assert peers["carrier-a"].address == "127.0.0.3:5070"
    assert peers["carrier-a"].transport == "udp"
    (route,) = snap.routes
    assert route.prefix == "" and route.strategy is RouteStrategy.LEAST_COST
    assert route.suppliers == (
        RouteSupplier(peers["carrier-a"].id, priority=0, weight=1),
        RouteSupplier(peers["carrier-b"].id, priority=1, weight=1),
    )


FULL = """
accounts:
  - {name: big, currency: EUR, balance: 12345678901234.5678, credit_limit: 50, prepaid: false,
     reserve_seconds: 45, record: yes}
tariffs:
  - name: sell-eur
    currency: EUR
    rates:
      - prefix: 0044
        price_per_minute: 0.1
        connect_fee: 0.000001
        increment: 30/6
        free_seconds: 5
        effective_from: 2025-01-01T00:00:00Z
        effective_to: "2026-01-01 00:00:00.123456"
      - {prefix: "0044", price_per_minute: "0.2", effective_from: 2026-01-01T00:00:00+01:00}
peers:
  - name: both-ways
    role: both
    account: big
    tariff: sell-eur
    acl: ["[2001:db8::]/32:5060", "2001:db8:1::/48", "192.0.2.0/24:5070"]
    username: alice
    password: trunk-s3cret-pass
    address: "[2001:db8::5]:5060"
    transport: tcp
    max_cps: 10
    caller_rewrite: [{match: '^\\+', replace: ''}]
    callee_rewrite: [{match: '^00(\\d+)$', replace: '\\1'}]
    profit_control: profit_only
    enabled: no
routes:
  - prefix: 44
    strategy: weighted
    name: UK
    suppliers: [{peer: both-ways, priority: 3, weight: 70}]
"""


def test_every_field_round_trips_exactly(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)

    async def scenario(engine: AsyncEngine) -> ConfigSnapshot:
        await provision(engine, path)
        return await _snapshot(engine)

    snap = run_with_engine(db_url, scenario)
    (account,) = snap.accounts.values()
    # Unquoted YAML numbers are read from their text: no float anywhere.
    assert account.balance == Decimal("12345678901234.5678")
    assert str(account.balance) == "12345678901234.5678"
    assert account.credit_limit == 50 and not account.prepaid
    assert account.reserve_seconds == 45
    assert account.record  # its relayed calls are recorded
    (tariff,) = snap.tariffs.values()
    assert tariff.currency == "EUR"
    old, new = sorted(tariff.rates, key=lambda r: r.effective_from or datetime.min)
    assert old.prefix == "0044"  # unquoted 0044 stays text, not octal
    assert old.price_per_minute == Decimal("0.1") and old.connect_fee == Decimal("0.000001")
    assert old.increment == Increment(30, 6) and old.free_seconds == 5
    assert old.effective_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert old.effective_to == datetime(2026, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)
    assert new.effective_from == datetime(2025, 12, 31, 23, tzinfo=UTC)
    (peer,) = snap.peers.values()
    assert peer.role is PeerRole.BOTH and peer.is_customer and peer.is_supplier
    assert peer.acl == (
        AclEntry(ipaddress.ip_network("2001:db8::/32"), 5060),
        AclEntry(ipaddress.ip_network("2001:db8:1::/48")),
        AclEntry(ipaddress.ip_network("192.0.2.0/24"), 5070),
    )
    assert (peer.username, peer.password) == ("alice", "trunk-s3cret-pass")
    assert peer.address == "[2001:db8::5]:5060" and peer.transport == "tcp"
    assert peer.max_calls is None and peer.max_cps == 10
    assert peer.caller_rewrite == (RewriteRule("^\\+", ""),)
    assert peer.callee_rewrite == (RewriteRule("^00(\\d+)$", "\\1"),)
    assert peer.profit_control is ProfitControl.PROFIT_ONLY and not peer.enabled
    (route,) = snap.routes
    assert (route.prefix, route.strategy) == ("44", RouteStrategy.WEIGHTED)
    assert route.suppliers == (RouteSupplier(peer.id, 3, 70),)


def test_updates_replace_rates_and_keep_balances(db_url: str, tmp_path: Path) -> None:
    changed = EXAMPLE.read_text()
    changed = changed.replace(
        'balance: "100.00", credit_limit: "0"', 'balance: "5", credit_limit: "20"'
    )
    changed = changed.replace(
        'rates: [{prefix: "1", price_per_minute: "0.0060", increment: "60/60"}]',
        'rates: [{prefix: "1", price_per_minute: "0.0055"}, {prefix: "7", price_per_minute: "0.03"}]',
    )
    changed = changed.replace("max_calls: 500", "max_calls: 20")
    changed = changed.replace("suppliers: [carrier-a, carrier-b]", "suppliers: [carrier-b]")
    path = _write(tmp_path, changed)

    async def scenario(engine: AsyncEngine) -> tuple[ProvisionReport, ConfigSnapshot, list[Any]]:
        await provision(engine, EXAMPLE)
        report = await provision(engine, path)
        async with session_factory(engine)() as session:
            changes = list(await session.scalars(select(BalanceChangeRow)))
        return report, await _snapshot(engine), changes

    report, snap, changes = run_with_engine(db_url, scenario)
    assert report.config_version == 2
    assert report.updated == {
        "accounts": ["acme"],
        "tariffs": ["buy-a"],
        "peers": ["acme-trunk"],
        "routes": ["(default)"],
        "subscribers": [],
        "dids": [],
        "settings": [],
    }
    accounts = {a.name: a for a in snap.accounts.values()}
    # The balance in the file is the opening balance: not applied to an existing account.
    assert accounts["acme"].balance == Decimal("100") and accounts["acme"].credit_limit == 20
    tariffs = {t.name: t for t in snap.tariffs.values()}
    assert [(r.prefix, r.price_per_minute, r.increment) for r in tariffs["buy-a"].rates] == [
        ("1", Decimal("0.0055"), Increment(1, 1)),
        ("7", Decimal("0.03"), Increment(1, 1)),
    ]
    peers = {p.name: p for p in snap.peers.values()}
    assert peers["acme-trunk"].max_calls == 20
    assert snap.routes[0].suppliers == (RouteSupplier(peers["carrier-b"].id, 0, 1),)
    # The opening balance is in the audit trail, once.
    assert [(c.account_id, c.amount, c.kind) for c in changes] == [
        (accounts["acme"].id, Decimal("100"), BalanceChangeKind.ADJUSTMENT)
    ]


def test_dry_run_writes_nothing(db_url: str) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        before = await _dump(engine)
        report = await provision(engine, EXAMPLE, dry_run=True)
        assert report.dry_run and report.changed and len(report.created["peers"]) == 3
        assert "dry run" in report.summary()
        assert await _dump(engine) == before

    run_with_engine(db_url, scenario)


def test_unknown_reference_names_file_line_field_and_changes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text().replace(
        "{name: acme-trunk, role: customer, account: acme, tariff: retail,",
        "{name: acme-trunk, role: customer, account: acme, tariff: retial,",
    )
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "retial" in row)
    path = _write(tmp_path, text)

    async def scenario(engine: AsyncEngine) -> None:
        await provision_text(engine, "accounts: [{name: old, currency: USD, balance: 1}]")
        before = await _dump(engine)
        with pytest.raises(ProvisioningError) as info:
            await provision(engine, path)
        assert str(info.value) == f"{path}:{line}: peers[0].tariff: unknown tariff 'retial'"
        assert await _dump(engine) == before
        async with session_factory(engine)() as session:
            assert await config_version(session) == 1

    run_with_engine(db_url, scenario)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            """
            accounts:
              - name: a
                currency: USD
                balance: 1.00001
            """,
            "4: accounts[0].balance: 1.00001 has more than 4 decimal places",
        ),
        (
            """
            accounts:
              - {name: a, currency: usd}
            """,
            "2: accounts[0].currency: currency must be a 3-letter",
        ),
        (
            """
            accounts:
              - {name: a, currency: USD, balanse: 3}
            """,
            "2: accounts[0].balanse: unknown field",
        ),
        (
            """
            accounts:
              - {name: a, currency: USD}
              - {name: a, currency: USD}
            """,
            "3: accounts[1]: duplicate account 'a' (first on line 2)",
        ),
        (
            """
            tariffs:
              - name: t
                rates:
                  - {prefix: "1", price_per_minute: .inf}
            """,
            "4: tariffs[0].rates[0].price_per_minute: expected a decimal number",
        ),
        (
            """
            tariffs:
              - name: t
                rates:
                  - {prefix: "1", price_per_minute: "0.01", increment: 60}
            """,
            "4: tariffs[0].rates[0].increment: increment must be MIN/STEP",
        ),
        (
            """
            tariffs:
              - name: t
                rates:
                  - {prefix: "1", price_per_minute: "-0.01"}
            """,
            "4: tariffs[0].rates[0].price_per_minute: must be at least 0",
        ),
        (
            """
            tariffs:
              - name: t
                rates:
                  - {prefix: "1", price_per_minute: "0.01"}
                  - {prefix: "1", price_per_minute: "0.02"}
            """,
            "5: tariffs[0].rates[1].prefix: prefix '1' is already rated on line 4",
        ),
        (
            """
            tariffs:
              - name: t
                rates:
                  - {prefix: "1a", price_per_minute: "0.01"}
            """,
            "4: tariffs[0].rates[0].prefix: a prefix is digits only",
        ),
        (
            """
            peers:
              - name: p
                role: customer
                account: a
                tariff: t
                acl:
                  - 10.0.0.1/8
            """,
            "7: peers[0].acl[0]: '10.0.0.1/8' has host bits set",
        ),
        (
            """
            peers:
              - {name: p, role: vendor, account: a, address: "h:5060"}
            """,
            "2: peers[0].role: must be one of customer, supplier, both; got 'vendor'",
        ),
        (
            """
            peers:
              - name: p
                role: supplier
                account: a
                address: h
                callee_rewrite: [{match: "^(", replace: ""}]
            """,
            "6: peers[0].callee_rewrite[0]: rewrite '^(' -> ''",
        ),
        (
            """
            peers:
              - {name: p, role: supplier, account: a, address: h, max_calls: 0}
            """,
            "2: peers[0].max_calls: must be at least 1, got 0",
        ),
        (
            """
            routes:
              - {prefix: "1", strategy: cheapest, suppliers: [x]}
            """,
            "2: routes[0].strategy: must be one of priority, least_cost, weighted",
        ),
        (
            """
            routes:
              - {prefix: "1", suppliers: [x, {peer: x, weight: 2}]}
            """,
            "2: routes[0].suppliers[1]: supplier 'x' is listed twice",
        ),
        (
            """
            routes:
              - {prefix: "1", suppliers: []}
            """,
            "2: routes[0].suppliers: at least one supplier is required",
        ),
        (
            """
            accounts: [{name: a, currency: USD}
            """,
            "2: invalid YAML: expected ',' or ']'",
        ),
        (
            """
            widgets: []
            """,
            "1: widgets: unknown field",
        ),
    ],
)
def test_file_errors(tmp_path: Path, yaml_text: str, expected: str) -> None:
    # Validation of the file alone happens before the database is touched.
    from smartswitch.admin.provisioning import parse_document

    path = _write(tmp_path, yaml_text)
    with pytest.raises(ProvisioningError) as info:
        parse_document(path.read_text(), str(path))
    assert f"{path}:{expected}" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            """
            peers:
              - name: p
                role: customer
                account: acme
                tariff: retail
            """,
            "2: peers[0].acl: a customer needs an acl or a username and password",
        ),
        (
            """
            peers:
              - {name: p, role: customer, account: acme, acl: ["10.0.0.0/8"]}
            """,
            "2: peers[0].tariff: required for a customer",
        ),
        (
            """
            peers:
              - {name: p, role: supplier, account: acme}
            """,
            "2: peers[0].address: required for a supplier",
        ),
        (
            """
            peers:
              - {name: p, role: supplier, account: acme, address: h, username: u}
            """,
            "2: peers[0].password: username and password go together",
        ),
        (
            """
            peers:
              - {name: p, role: supplier, account: acme, address: h, password: peer-pw-quartz-88}
            """,
            "2: peers[0].username: username and password go together",
        ),
        (
            """
            peers:
              - name: p
                role: supplier
                account: acme
                address: h
                register: {username: u, registrar: h}
            """,
            "6: peers[0].register.password: required",
        ),
    ],
)
def test_rules_of_each_entity_are_the_writers(
    db_url: str, tmp_path: Path, yaml_text: str, expected: str
) -> None:
    # The file reads well; the writer's rules (a peer's role, its secrets) refuse it, at the
    # entity's line, before looking anything up, and change nothing.
    from smartswitch.admin.provisioning import parse_document

    path = _write(tmp_path, yaml_text)
    parse_document(path.read_text(), str(path))
    _refused_after_the_example(db_url, path, expected)


def test_a_password_left_out_keeps_the_stored_one(db_url: str) -> None:
    # The same rule as the UI's and the API's: a file need not hold the secrets once set.
    first = """
    accounts: [{name: a, currency: USD}]
    peers:
      - name: s
        role: supplier
        account: a
        address: h
        username: u
        password: peer-pw-quartz-81
        register: {username: r, password: rpw1, registrar: h}
    """
    later = """
    peers:
      - {name: s, role: supplier, account: a, address: h, username: u2, password: "",
         register: {username: r2, registrar: h}}
    """
    dropped = """
    peers:
      - {name: s, role: supplier, account: a, address: h}
    """

    async def scenario(engine: AsyncEngine) -> list[tuple[Any, ...]]:
        peers = []
        for text in (first, later, dropped):
            await provision_text(engine, textwrap.dedent(text))
            snap = await _snapshot(engine)
            (peer,) = snap.peers.values()
            register = peer.register
            peers.append(
                (peer.username, peer.password, register and (register.username, register.password))
            )
        return peers

    assert run_with_engine(db_url, scenario) == [
        ("u", "peer-pw-quartz-81", ("r", "rpw1")),
        ("u2", "peer-pw-quartz-81", ("r2", "rpw1")),
        (None, None, None),  # no username, no password; no registration
    ]


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    from smartswitch.admin.provisioning import parse_document

    text = "accounts:\n  - {name: a, currency: usd, balance: x}\n  - {currency: USD}\n"
    with pytest.raises(ProvisioningError) as info:
        parse_document(text, "p.yaml")
    assert [str(i) for i in info.value.issues] == [
        "p.yaml:2: accounts[0].currency: currency must be a 3-letter ISO 4217 code in "
        "capitals, got 'usd'",
        "p.yaml:2: accounts[0].balance: expected a decimal number, got 'x'",
        "p.yaml:3: accounts[1].name: required",
    ]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            """
            peers:
              - {name: p, role: supplier, account: nobody, address: h}
            """,
            "2: peers[0].account: unknown account 'nobody'",
        ),
        (
            """
            accounts: [{name: e, currency: EUR}]
            peers:
              - {name: p, role: customer, account: e, tariff: retail, acl: ["10.0.0.0/8"]}
            """,
            "3: peers[0].tariff: tariff 'retail' is in USD but account 'e' is in EUR",
        ),
        (
            """
            routes:
              - {prefix: "9", suppliers: [acme-trunk]}
            """,
            "2: routes[0].suppliers[0]: peer 'acme-trunk' is a customer",
        ),
        (
            """
            routes:
              - {prefix: "9", suppliers: [ghost]}
            """,
            "2: routes[0].suppliers[0]: unknown peer 'ghost'",
        ),
        (
            """
            peers:
              - {name: copycat, role: customer, account: acme, tariff: retail,
                 acl: ["127.0.0.2/32"]}
            """,
            "3: peers[0].acl: 127.0.0.2/32 is in the ACL of both 'acme-trunk' and 'copycat'",
        ),
        (
            """
            peers:
              - {name: u1, role: customer, account: acme, tariff: retail, username: x,
                 password: peer-pw-quartz-88}
              - {name: u2, role: customer, account: acme, tariff: retail, username: x,
                 password: peer-pw-quartz-89}
            """,
            "4: peers[1].username: username 'x' is already used by peer 'u1'",
        ),
        (
            """
            accounts: [{name: acme, currency: EUR}]
            """,
            "1: accounts[0].currency: account 'acme' exists in USD",
        ),
        (
            """
            accounts: [{name: nos, currency: USD}]
            peers:
              - {name: notariff, role: supplier, account: nos, address: h}
            routes:
              - {prefix: "5", strategy: least_cost, suppliers: [notariff]}
            """,
            "5: routes[0].suppliers[0]: peer 'notariff' has no tariff",
        ),
        (
            """
            peers:
              - {name: carrier-a, role: customer, account: carrier-a, tariff: buy-a,
                 acl: ["10.9.9.9/32"]}
            """,
            "2: peers[0].role: peer 'carrier-a' is a supplier of the route for prefix ''",
        ),
    ],
)
def test_errors_against_the_database_change_nothing(
    db_url: str, tmp_path: Path, yaml_text: str, expected: str
) -> None:
    _refused_after_the_example(db_url, _write(tmp_path, yaml_text), expected)


def _refused_after_the_example(db_url: str, path: Path, expected: str) -> None:
    """Provisioning ``path`` over the example fails with ``expected`` and changes nothing."""

    async def scenario(engine: AsyncEngine) -> None:
        await provision(engine, EXAMPLE)
        before = await _dump(engine)
        with pytest.raises(ProvisioningError) as info:
            await provision(engine, path)
        assert f"{path}:{expected}" in str(info.value)
        assert await _dump(engine) == before

    run_with_engine(db_url, scenario)


def test_unreadable_file(tmp_path: Path) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        with pytest.raises(ProvisioningError, match="cannot read the file"):
            await provision(engine, tmp_path / "missing.yaml")

    run_with_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", scenario)


def test_merge_keys_and_empty_document(db_url: str) -> None:
    # Anchors are defined inside the sections (unknown top-level keys are refused), and
    # "<<" merges; a document that is only a comment changes nothing.
    doc = """
    accounts: [{name: acme, currency: USD}]
    peers:
      - &s {name: s1, role: supplier, account: acme, address: "192.0.2.1"}
      - {<<: *s, name: s2, address: "192.0.2.2"}
    """

    async def scenario(engine: AsyncEngine) -> ConfigSnapshot:
        empty = await provision_text(engine, "# nothing yet\n")
        assert not empty.changed and empty.config_version == 0
        await provision_text(engine, textwrap.dedent(doc))
        return await _snapshot(engine)

    snap = run_with_engine(db_url, scenario)
    assert sorted((p.name, p.address) for p in snap.peers.values()) == [
        ("s1", "192.0.2.1"),
        ("s2", "192.0.2.2"),
    ]


def test_settings_section_sets_capture_and_checks_each_value(db_url: str, tmp_path: Path) -> None:
    good = EXAMPLE.read_text() + textwrap.dedent(
        """
        settings:
          capture_mode: selected
          capture_customers: acme-trunk
          capture_hep: "127.0.0.1:9060"
          capture_max_age_days: 7
        """
    )
    bad = good.replace("capture_mode: selected", "capture_mode: sometimes").replace(
        "capture_customers: acme-trunk", "capture_customers: nobody"
    )

    async def scenario(engine: AsyncEngine) -> ProvisionReport:
        with pytest.raises(ProvisioningError) as info:
            await provision(engine, _write(tmp_path, bad))
        assert "settings.capture_mode: one of off, all, selected" in str(info.value)
        report = await provision(engine, _write(tmp_path, good))
        again = await provision(engine, _write(tmp_path, good))
        assert not again.changed
        with pytest.raises(ProvisioningError, match="no peer named nobody"):
            await provision_text(engine, "settings: {capture_suppliers: nobody}")
        return report

    report = run_with_engine(db_url, scenario)
    assert report.created["settings"] == [
        "capture_mode",
        "capture_customers",
        "capture_hep",
        "capture_max_age_days",
    ]

    async def read(engine: AsyncEngine) -> dict[str, str]:
        async with session_factory(engine)() as session:
            snapshot = await load_snapshot(session)
        return snapshot.settings

    settings = run_with_engine(db_url, read)
    capture = capture_settings(settings)
    assert capture.mode == "selected" and capture.customers == {"acme-trunk"}
    assert capture.hep == ("127.0.0.1", 9060) and capture.max_age_days == 7


def test_a_peer_certificate_fingerprint_is_stored_in_one_form(db_url: str, tmp_path: Path) -> None:
    """Pasted as ``openssl x509 -fingerprint -sha256`` prints it, or bare lower-case hex:
    kept as ``AB:CD:...``; anything else is refused naming the field."""
    digest = "0a" * 32
    text = EXAMPLE.read_text().replace(
        'acl: ["127.0.0.2/32"],', f'acl: ["127.0.0.2/32"], tls_fingerprint: "{digest}",'
    )
    assert digest in text
    path = _write(tmp_path, text)

    async def scenario(engine: AsyncEngine) -> ConfigSnapshot:
        await provision(engine, path)
        return await _snapshot(engine)

    snap = run_with_engine(db_url, scenario)
    fingerprints = {p.name: p.tls_fingerprint for p in snap.peers.values()}
    assert fingerprints == {
        "acme-trunk": ":".join(["0A"] * 32),
        "carrier-a": None,
        "carrier-b": None,
    }
    bad = _write(tmp_path, text.replace(digest, "0a0b"), "bad.yaml")

    async def refused(engine: AsyncEngine) -> None:
        with pytest.raises(ProvisioningError, match=r"peers\[0\]\.tls_fingerprint: a SHA-256"):
            await provision(engine, bad)

    run_with_engine(db_url, refused)
