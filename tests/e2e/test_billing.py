"""Billing mode end to end: sipp caller -> node (identification, authorisation, routing,
rating, CDRs) -> sipp suppliers, on loopback addresses.

Every test provisions the issue's example (examples/provision.yaml: customer acme calling
from 127.0.0.2, carrier-a at 0.0060/min and carrier-b at 0.0040/min, least cost) with the
suppliers' addresses set to the sipp callees it started, changes what it is about, and
starts a node with no ``[[route]]`` (billing mode). Results are read the way an operator
reads them: ``smartswitch cdr export``, ``smartswitch accounts`` and ``smartswitch audit``
on the node's data directory, plus what each sipp received.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartswitch.admin.reports import CDR_FIELDS

from .conftest import (
    CALLEE2_IP,
    CALLEE_IP,
    DIALLED,
    SippFactory,
    StartBillingNode,
)
from .node import Node
from .sipp import Sipp, SippResult, expect_final_scenario

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provision.yaml"
#: A source in no customer's ACL.
STRANGER_IP = "127.0.0.9"
#: The digest customer's phone: in no ACL either, so only its password identifies it.
DIGEST_CALLER_IP = "127.0.0.5"


# --------------------------------------------------------------------------- helpers


def example(carrier_a: Sipp, carrier_b: Sipp) -> dict[str, Any]:
    """The issue's example with carrier-a and carrier-b at these sipp callees."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    peer(document, "carrier-a")["address"] = SippFactory.address(carrier_a)
    peer(document, "carrier-b")["address"] = SippFactory.address(carrier_b)
    return document


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def peer(document: dict[str, Any], name: str) -> dict[str, Any]:
    return _named(document["peers"], name)


def account(document: dict[str, Any], name: str) -> dict[str, Any]:
    return _named(document["accounts"], name)


def retail_rate(document: dict[str, Any], prefix: str = "1") -> dict[str, Any]:
    rates: list[dict[str, Any]] = _named(document["tariffs"], "retail")["rates"]
    return next(r for r in rates if r["prefix"] == prefix)


def _ok(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def _nothing_received(result: SippResult) -> None:
    assert not result.received, "expected no message at all:\n" + result.describe()


def _call_id(result: SippResult) -> str:
    invite = next(m for m in result.sent if m.method == "INVITE")
    assert invite.call_id
    return invite.call_id


def _only_cdr(node: Node, call_id: str) -> dict[str, Any]:
    cdrs = [c for c in node.wait_cdrs(1) if c["call_id"] == call_id]
    assert len(cdrs) == 1, f"CDRs of {call_id}: {cdrs}\n{node.log_tail()}"
    return cdrs[0]


def _seconds(cdr: dict[str, Any], start: str, end: str) -> float:
    begin = datetime.fromisoformat(cdr[start].replace("Z", "+00:00"))
    finish = datetime.fromisoformat(cdr[end].replace("Z", "+00:00"))
    return (finish - begin).total_seconds()


def _balance(node: Node, name: str) -> Decimal:
    return Decimal(node.accounts()[name]["balance"])


def _audit_exact(node: Node) -> None:
    audit = node.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit: exact" in audit.stdout, audit.stdout


def _wait_calls_up(node: Node, calls: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.health()["call_states"].get("connected", 0) >= calls:
            return
        time.sleep(0.05)
    raise AssertionError(f"{calls} calls not up within {timeout} s: {node.health()}")


# --------------------------------------------------------------------------- refusals


def test_unknown_source_gets_403_and_the_supplier_sees_nothing(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node = start_billing_node(example(a, b))

    uac = sipp.uac(node.sip_address, "uac_expect_403", ip=STRANGER_IP)

    _ok(uac)
    time.sleep(0.5)  # a wrongly routed INVITE would have arrived by now
    _nothing_received(a.stop())
    _nothing_received(b.stop())
    assert node.cdrs() == [], "a call that was never identified has no CDR"


def test_no_rate_gets_404(
    start_billing_node: StartBillingNode, sipp: SippFactory, tmp_path: Path
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node = start_billing_node(example(a, b))

    # retail rates "1" and "44" only: 999... has no rate (the default route would carry it)
    uac = sipp.uac(node.sip_address, expect_final_scenario(404, tmp_path), service="9995551234")

    _ok(uac)
    reason = uac.received_responses(404)[0].reason
    assert "rate" in reason, reason
    _nothing_received(a.stop())
    _nothing_received(b.stop())


@pytest.mark.parametrize("balance", ["0", "0.0099"])
def test_empty_balance_gets_402(
    start_billing_node: StartBillingNode, sipp: SippFactory, tmp_path: Path, balance: str
) -> None:
    """0.0099 does not pay the first 60 s at 0.0100/min (60/60): as good as empty."""
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    document = example(a, b)
    account(document, "acme")["balance"] = balance
    node = start_billing_node(document)

    uac = sipp.uac(node.sip_address, expect_final_scenario(402, tmp_path))

    _ok(uac)
    assert "balance" in uac.received_responses(402)[0].reason
    _nothing_received(a.stop())
    _nothing_received(b.stop())
    assert _balance(node, "acme") == Decimal(balance)


# --------------------------------------------------------------------------- routing


def test_least_cost_picks_carrier_b(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=1)
    node = start_billing_node(example(a, b))

    uac = sipp.uac(node.sip_address, "uac", duration_ms=500)

    _ok(uac)
    _ok(b.wait(15))
    _nothing_received(a.stop())
    cdr = _only_cdr(node, _call_id(uac))
    # The CDR, field by field: 60/60, so 0.5 s bills a minute on both sides.
    assert cdr["customer_peer"] == "acme-trunk"
    assert cdr["customer_account"] == "acme"
    assert cdr["supplier_peer"] == "carrier-b"
    assert cdr["supplier_account"] == "carrier-b"
    assert (cdr["price"], cdr["cost"], cdr["profit"]) == ("0.0100", "0.0040", "0.0060")
    assert cdr["billed_seconds"] == 60
    assert cdr["currency"] == "USD"
    assert (cdr["sip_code"], cdr["sip_reason"]) == (200, "OK")
    assert (cdr["hangup_side"], cdr["hangup_reason"]) == ("caller", "bye")
    assert (cdr["callee"], cdr["callee_out"]) == (DIALLED, DIALLED)
    assert 0 < cdr["duration_ms"] < 3000
    assert node.cdr_attempts()[cdr["call_id"]] == [(1, "carrier-b", 200, "OK")]
    assert _balance(node, "acme") == Decimal("99.9900")
    assert _balance(node, "carrier-b") == Decimal("-0.0040")  # what we owe carrier-b
    assert _balance(node, "carrier-a") == Decimal("0.0000")
    _audit_exact(node)


def test_carrier_b_503_fails_over_to_carrier_a(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer_bye", ip=CALLEE_IP, calls=1)
    b = sipp.uas("uas_503", ip=CALLEE2_IP, calls=1)
    node = start_billing_node(example(a, b))

    uac = sipp.uac(node.sip_address, "uac_wait_bye", recv_timeout_ms=10000)

    _ok(uac)
    _ok(b.wait(15))
    _ok(a.wait(15))
    assert not uac.received_responses(503), "the 503 must not reach the caller"
    cdr = _only_cdr(node, _call_id(uac))
    assert cdr["supplier_peer"] == "carrier-a"
    assert (cdr["price"], cdr["cost"], cdr["profit"]) == ("0.0100", "0.0060", "0.0040")
    assert (cdr["hangup_side"], cdr["hangup_reason"]) == ("callee", "bye")
    assert node.cdr_attempts()[cdr["call_id"]] == [
        (1, "carrier-b", 503, "Service Unavailable"),
        (2, "carrier-a", 200, "OK"),
    ]
    assert _balance(node, "carrier-a") == Decimal("-0.0060")
    assert _balance(node, "carrier-b") == Decimal("0.0000")
    _audit_exact(node)


def test_every_supplier_failing_is_one_unanswered_cdr(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_503", ip=CALLEE_IP, calls=1)
    b = sipp.uas("uas_503", ip=CALLEE2_IP, calls=1)
    node = start_billing_node(example(a, b))

    uac = sipp.uac(node.sip_address, "uac_expect_503")

    _ok(uac)
    _ok(a.wait(15))
    _ok(b.wait(15))
    cdr = _only_cdr(node, _call_id(uac))
    assert (cdr["sip_code"], cdr["answer_time"], cdr["supplier_peer"]) == (503, None, None)
    assert (cdr["price"], cdr["cost"], cdr["billed_seconds"], cdr["duration_ms"]) == (
        "0.0000",
        "0.0000",
        0,
        0,
    )
    assert [a[:3] for a in node.cdr_attempts()[cdr["call_id"]]] == [
        (1, "carrier-b", 503),
        (2, "carrier-a", 503),
    ]
    assert _balance(node, "acme") == Decimal("100.0000")
    _audit_exact(node)


@pytest.mark.parametrize("control", ["allow_loss", "no_loss", "profit_only"])
def test_profit_control_refuses_a_dearer_supplier(
    start_billing_node: StartBillingNode, sipp: SippFactory, control: str
) -> None:
    """Sold at 0.0050/min: carrier-b (0.0040) is allowed by every control, carrier-a
    (0.0060) only by allow_loss. carrier-b refuses the call; only allow_loss fails over."""
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_503", ip=CALLEE2_IP, calls=1)
    document = example(a, b)
    retail_rate(document)["price_per_minute"] = "0.0050"
    peer(document, "acme-trunk")["profit_control"] = control
    node = start_billing_node(document)

    if control == "allow_loss":
        uac = sipp.uac(node.sip_address, "uac")
        _ok(uac)
        assert node.cdrs()[0]["supplier_peer"] == "carrier-a"
        assert a.stop().received_requests("INVITE")
    else:
        uac = sipp.uac(node.sip_address, "uac_expect_503")
        _ok(uac)
        time.sleep(0.5)
        _nothing_received(a.stop())
    _ok(b.wait(15))


@pytest.mark.parametrize(("control", "price"), [("no_loss", "0.0030"), ("profit_only", "0.0040")])
def test_profit_control_with_every_supplier_dearer_answers_503(
    start_billing_node: StartBillingNode, sipp: SippFactory, control: str, price: str
) -> None:
    """profit_only at 0.0040 refuses carrier-b at the same price (no profit), no_loss at
    0.0030 refuses both: no supplier left, 503 with a Reason, and no supplier is tried."""
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    document = example(a, b)
    retail_rate(document)["price_per_minute"] = price
    peer(document, "acme-trunk")["profit_control"] = control
    node = start_billing_node(document)

    uac = sipp.uac(node.sip_address, "uac_expect_503")

    _ok(uac)
    reason = uac.received_responses(503)[0].header("reason")
    assert reason is not None and "no supplier" in reason, uac.describe()
    time.sleep(0.5)
    _nothing_received(a.stop())
    _nothing_received(b.stop())


def test_no_loss_allows_a_supplier_at_the_same_price(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=1)
    document = example(a, b)
    retail_rate(document)["price_per_minute"] = "0.0040"
    peer(document, "acme-trunk")["profit_control"] = "no_loss"
    node = start_billing_node(document)

    _ok(sipp.uac(node.sip_address, "uac"))
    _ok(b.wait(15))
    cdr = node.wait_cdrs(1)[0]
    assert (cdr["supplier_peer"], cdr["profit"]) == ("carrier-b", "0.0000")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("reserve_seconds", [None, 2])
def test_call_cut_at_the_balance_limit(
    start_billing_node: StartBillingNode, sipp: SippFactory, reserve_seconds: int | None
) -> None:
    """0.0500 at 0.6000/min, 1/1, buys exactly 5 s: both legs get a BYE at 5 s, the CDR
    bills 5 s, and the balance ends at 0. With ``reserve_seconds = 2`` the time is granted
    in slices of 2 s and extended at each boundary (2 + 2 + 1)."""
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=1, recv_timeout_ms=20000)
    document = example(a, b)
    account(document, "acme")["balance"] = "0.0500"
    retail_rate(document).update(price_per_minute="0.6000", increment="1/1")
    # 5 s is under the default minimum grant (10 s): let this call have it.
    config: dict[str, int] = {"min_grant_seconds": 1}
    if reserve_seconds is not None:
        config["reserve_seconds"] = reserve_seconds
    node = start_billing_node(document, **config)

    started = time.monotonic()
    uac = sipp.uac(node.sip_address, "uac_wait_bye", recv_timeout_ms=20000)
    took = time.monotonic() - started

    _ok(uac)
    callee = b.wait(15)
    _ok(callee)
    assert uac.received_requests("BYE") and callee.received_requests("BYE")
    assert 4.0 <= took <= 8.0, f"the caller's call lasted {took:.1f} s, expected about 5 s"
    cdr = _only_cdr(node, _call_id(uac))
    assert abs(_seconds(cdr, "answer_time", "end_time") - 5.0) <= 1.0, cdr
    assert cdr["billed_seconds"] == 5
    assert cdr["duration_ms"] == 5000
    assert cdr["price"] == "0.0500"
    assert (cdr["hangup_side"], cdr["hangup_reason"]) == ("switch", "max duration")
    assert _balance(node, "acme") == Decimal("0.0000")
    _audit_exact(node)
    # Nothing is left to buy time with: the next call is refused.
    _nothing_received(a.stop())


def test_concurrent_call_limit_answers_503_with_reason(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    document = example(a, b)
    peer(document, "acme-trunk")["max_calls"] = 1
    node = start_billing_node(document)

    first = sipp.uac_background(node.sip_address, "uac", duration_ms=4000, name="first")
    _wait_calls_up(node, 1)
    second = sipp.uac(node.sip_address, "uac_expect_503", name="second")

    _ok(second)
    reason = second.received_responses(503)[0].header("reason")
    assert reason is not None and "concurrent call limit" in reason, second.describe()
    _ok(first.wait(30))
    # The limit counts calls in progress: with the first one over, a call goes through.
    _ok(sipp.uac(node.sip_address, "uac", name="third"))
    assert len(b.stop().received_requests("INVITE")) == 2
    _nothing_received(a.stop())
    cdrs = node.wait_cdrs(2)
    assert len(cdrs) == 2, "the refused call has no CDR"


# --------------------------------------------------------------------------- digest


def _digest_world(a: Sipp, b: Sipp) -> dict[str, Any]:
    document = example(a, b)
    document["accounts"].append({"name": "dialup", "currency": "USD", "balance": "5.00"})
    document["peers"].append(
        {
            "name": "dialup-phone",
            "role": "customer",
            "account": "dialup",
            "tariff": "retail",
            "username": "alice",
            "password": "dialup-s3cret-42",
        }
    )
    return document


def test_digest_customer_is_challenged_then_accepted(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=1)
    # sipp answers the first challenge only and knows MD5 only: offer MD5.
    node = start_billing_node(_digest_world(a, b), digest_algorithms=["MD5"])

    uac = sipp.uac(
        node.sip_address,
        "uac_auth",
        ip=DIGEST_CALLER_IP,
        duration_ms=300,
        extra=(
            "-au",
            "alice",
            "-ap",
            "dialup-s3cret-42",
            "-auth_uri",
            f"{DIALLED}@{node.sip_address}",
        ),
    )

    _ok(uac)
    _ok(b.wait(15))
    challenge = uac.received_responses(407)[0]
    assert 'realm="smartswitch"' in (challenge.header("proxy-authenticate") or ""), challenge
    cdr = _only_cdr(node, _call_id(uac))
    assert (cdr["customer_peer"], cdr["customer_account"]) == ("dialup-phone", "dialup")
    assert _balance(node, "dialup") == Decimal("4.9900")
    assert _balance(node, "acme") == Decimal("100.0000")
    _nothing_received(a.stop())


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong"), ("mallory", "dialup-s3cret-42")]
)
def test_digest_wrong_credentials_get_403(
    start_billing_node: StartBillingNode, sipp: SippFactory, username: str, password: str
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node = start_billing_node(_digest_world(a, b), digest_algorithms=["MD5"])

    uac = sipp.uac(
        node.sip_address,
        "uac_auth_403",
        ip=DIGEST_CALLER_IP,
        extra=("-au", username, "-ap", password, "-auth_uri", f"{DIALLED}@{node.sip_address}"),
    )

    _ok(uac)
    time.sleep(0.5)
    _nothing_received(a.stop())
    _nothing_received(b.stop())
    assert node.cdrs() == []


def test_digest_credentials_for_another_request_uri_get_403(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    """Credentials computed for one Request-URI must not place a call to another
    (RFC 3261 22.4): else a captured INVITE's Proxy-Authorization would dial anything."""
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node = start_billing_node(_digest_world(a, b), digest_algorithms=["MD5"])

    uac = sipp.uac(
        node.sip_address,
        "uac_auth_403",
        ip=DIGEST_CALLER_IP,
        extra=(
            "-au",
            "alice",
            "-ap",
            "dialup-s3cret-42",
            "-auth_uri",
            f"4420000000@{node.sip_address}",
        ),
    )

    _ok(uac)
    _nothing_received(a.stop())
    _nothing_received(b.stop())


# --------------------------------------------------------------------------- operator


def test_cdr_export_and_accounts_output(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=2)
    node = start_billing_node(example(a, b))

    _ok(sipp.uac(node.sip_address, "uac", calls=2, rate=10, duration_ms=200), 2)
    _ok(b.wait(15), 2)
    from_json = node.wait_cdrs(2)
    assert len(from_json) == 2

    text = node.cli("cdr", "export", "--format", "csv").stdout
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CDR_FIELDS
    from_csv = list(reader)
    assert len(from_csv) == 2
    for row, record in zip(from_csv, from_json, strict=True):
        assert set(record) == set(CDR_FIELDS)
        as_text = {k: "" if v is None else str(v) for k, v in record.items()}
        assert row == as_text
    for record in from_json:
        # money is fixed-point text, never a float; times are UTC with a Z
        assert all(isinstance(record[k], str) for k in ("price", "cost", "profit"))
        assert record["setup_time"].endswith("Z") and record["end_time"].endswith("Z")
        assert record["setup_time"] <= record["answer_time"] <= record["end_time"]

    since = node.cli("cdr", "export", "--format", "json", "--since", "2999-01-01").stdout
    assert json.loads(since) == []

    accounts = node.accounts()
    assert accounts["acme"] == {
        "name": "acme",
        "currency": "USD",
        "balance": "99.9800",
        "credit_limit": "0.0000",
        "available": "99.9800",
        "prepaid": True,
    }
    assert accounts["carrier-b"]["balance"] == "-0.0080"
    table = node.cli("accounts").stdout.splitlines()
    assert table[0].split() == [
        "name",
        "currency",
        "balance",
        "credit_limit",
        "available",
        "prepaid",
    ]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["acme"] == ["acme", "USD", "99.9800", "0.0000", "99.9800", "yes"]
    assert rows["carrier-a"][2] == "0.0000"
    _audit_exact(node)


def test_reprovisioning_a_running_node_takes_effect(
    start_billing_node: StartBillingNode, sipp: SippFactory, tmp_path: Path
) -> None:
    a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    document = example(a, b)
    node = start_billing_node(document)

    _ok(sipp.uac(node.sip_address, "uac", name="before"))
    assert node.wait_cdrs(1)[-1]["supplier_peer"] == "carrier-b"

    # carrier-b's buying rate goes up: least cost now prefers carrier-a.
    changed = copy.deepcopy(document)
    _named(changed["tariffs"], "buy-b")["rates"][0]["price_per_minute"] = "0.0090"
    assert "updated" in node.provision(changed)
    node.wait_config_applied()
    _ok(sipp.uac(node.sip_address, "uac", name="after"))
    cdrs = node.wait_cdrs(2)
    assert cdrs[-1]["supplier_peer"] == "carrier-a", cdrs
    assert cdrs[-1]["cost"] == "0.0060"

    # The customer is disabled: refused at once, without a restart.
    disabled = copy.deepcopy(changed)
    peer(disabled, "acme-trunk")["enabled"] = False
    node.provision(disabled)
    node.wait_config_applied()
    _ok(sipp.uac(node.sip_address, expect_final_scenario(403, tmp_path), name="disabled"))
    assert len(node.cdrs()) == 2
    assert len(a.stop().received_requests("INVITE")) == 1
    assert len(b.stop().received_requests("INVITE")) == 1
