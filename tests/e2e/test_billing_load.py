"""Billing under load: money conservation over 1 000 calls, and durability across SIGKILL.

Both run the issue's example (examples/provision.yaml) with its suppliers at sipp callees
on free ports, and read the outcome as an operator would (``cdr export``, ``accounts``,
``audit``). Kept to a few seconds of traffic each: 200 and 100 calls per second.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from .conftest import CALLEE2_IP, CALLEE_IP, SippFactory, StartBillingNode
from .sipp import completed_call_ids, stat_int
from .test_billing import example

pytestmark = pytest.mark.e2e

OPENING = Decimal("100.0000")  # acme's balance in the example


def test_money_is_conserved_over_1000_calls(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    """1 000 calls of 1 s: exactly 1 000 answered CDRs, the customer's balance fell by the
    sum of their prices to the last 0.0001, the supplier's by their cost, audit exact."""
    a = sipp.uas("uas", ip=CALLEE_IP, calls=None, trace_messages=False)
    b = sipp.uas("uas", ip=CALLEE2_IP, calls=None, trace_messages=False)
    node = start_billing_node(example(a, b), log_level="warning")

    uac = sipp.uac(
        node.sip_address,
        "uac",
        calls=1000,
        rate=200,
        duration_ms=1000,
        timeout_s=90,
        trace_messages=False,
        extra=("-l", "1000"),
    )

    assert uac.returncode == 0, uac.describe()
    assert (uac.successful, uac.failed) == (1000, 0), uac.describe()
    cdrs = node.wait_cdrs(1000, timeout=60)
    assert len(cdrs) == 1000
    answered = [c for c in cdrs if c["sip_code"] == 200 and c["answer_time"] is not None]
    assert len(answered) == 1000
    assert len({c["call_id"] for c in cdrs}) == 1000, "a call recorded twice"
    # 1 s at 0.0100/min, 60/60: 0.0100 each; bought from carrier-b at 0.0040.
    assert {(c["price"], c["cost"], c["supplier_peer"]) for c in cdrs} == {
        ("0.0100", "0.0040", "carrier-b")
    }
    prices = sum((Decimal(c["price"]) for c in cdrs), Decimal(0))
    costs = sum((Decimal(c["cost"]) for c in cdrs), Decimal(0))
    accounts = node.accounts()
    assert OPENING - Decimal(accounts["acme"]["balance"]) == prices == Decimal("10.0000")
    assert -Decimal(accounts["carrier-b"]["balance"]) == costs == Decimal("4.0000")
    assert Decimal(accounts["carrier-a"]["balance"]) == 0
    audit = node.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert not a.stop().received, "least cost: carrier-a is never needed"
    b.stop()


def test_sigkill_during_traffic_loses_and_doubles_no_finished_call(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    """Kill the node (SIGKILL) in the middle of traffic, start it again on the same data:
    every call the caller saw end (200 to its BYE) has exactly one CDR once the outbox has
    drained, no call is recorded twice, and the money is exact."""
    a = sipp.uas("uas", ip=CALLEE_IP, calls=None, trace_messages=False)
    b = sipp.uas("uas", ip=CALLEE2_IP, calls=None, trace_messages=False, recv_timeout_ms=5000)
    node = start_billing_node(example(a, b), log_level="warning")

    uac = sipp.uac_background(
        node.sip_address,
        "uac",
        calls=1200,
        rate=100,
        duration_ms=500,
        timeout_s=90,
        recv_timeout_ms=3000,
        stats_period_s=1,
        extra=("-l", "1200"),
    )
    deadline = time.monotonic() + 30
    while stat_int(uac.current_stats(), "SuccessfulCall") < 150:
        assert uac.running and time.monotonic() < deadline, uac.report()
        time.sleep(0.1)
    node.kill()  # SIGKILL: calls in progress, CDRs in the outbox, batches half delivered
    time.sleep(0.5)
    node.start()  # the same addresses and data directory
    result = uac.wait(150)

    completed = completed_call_ids(result.messages)
    assert len(completed) > 300, result.describe()  # calls ended before and after the kill
    deadline = time.monotonic() + 60
    cdrs = node.cdrs()
    while not completed <= {c["call_id"] for c in cdrs} and time.monotonic() < deadline:
        time.sleep(0.5)
        cdrs = node.cdrs()
    missing = completed - {c["call_id"] for c in cdrs}
    assert not missing, f"{len(missing)} finished calls without a CDR, e.g. {sorted(missing)[:5]}"
    twice = [call for call, n in Counter(c["call_id"] for c in cdrs).items() if n > 1]
    assert not twice, f"calls recorded twice: {twice[:5]}"
    prices = sum((Decimal(c["price"]) for c in cdrs), Decimal(0))
    assert OPENING - Decimal(node.accounts()["acme"]["balance"]) == prices
    audit = node.audit()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    a.stop()
    b.stop()
