"""Password guessing against a real node, end to end: a dictionary attack on a subscriber from
one source and spread over hundreds of sources, while the subscriber's own phone (sipp)
registers and calls through it.

The subscriber's password is weak-looking but passes the password policy
(``letmein300letmein``), and the attacker's dictionary holds it: what stops the attack is the
guard, not luck. The attacker is plain UDP sockets bound to loopback addresses (127.0.N.M,
each its own source to the node), one REGISTER challenge and one guess per attempt, every
attempt and its answer counted; the budget is bounded in count and time. Addresses: the
node 127.0.0.1, the phone 127.0.0.2, the supplier 127.0.0.3, the attackers 127.0.10.x and
127.0.20.0 to 127.0.21.x.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from .attacker import Tally, attack, dictionary, metrics
from .conftest import CALLEE_IP, DIALLED, SippFactory, StartBillingNode
from .node import Node, wait_for
from .sipp import SippResult

pytestmark = pytest.mark.e2e

PHONE_IP = "127.0.0.2"
PASSWORD = "letmein300letmein"  # weak-looking, accepted by the policy; in the dictionary below


def document(supplier: str) -> dict[str, Any]:
    return {
        "accounts": [
            {"name": "alice-acct", "currency": "USD", "balance": "10"},
            {"name": "carrier", "currency": "USD"},
        ],
        "tariffs": [
            {"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.01"}]},
            {"name": "buy", "rates": [{"prefix": "1", "price_per_minute": "0.005"}]},
        ],
        "peers": [
            {
                "name": "carrier",
                "role": "supplier",
                "account": "carrier",
                "tariff": "buy",
                "address": supplier,
            }
        ],
        "routes": [{"prefix": "1", "suppliers": ["carrier"]}],
        "subscribers": [
            {"username": "alice", "password": PASSWORD, "account": "alice-acct", "tariff": "retail"}
        ],
    }


def _ok(result: SippResult) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (1, 0), result.describe()


def phone_registers(sipp: SippFactory, node: Node, name: str) -> SippResult:
    return sipp.uac(
        node.sip_address,
        "reg_phone",
        ip=PHONE_IP,
        service="alice",
        duration_ms=100,
        name=name,
        keys={"expires": "600"},
        extra=("-au", "alice", "-ap", PASSWORD),
    )


def phone_calls(sipp: SippFactory, node: Node, name: str) -> SippResult:
    return sipp.uac(
        node.sip_address,
        "uac_auth",
        ip=PHONE_IP,
        duration_ms=300,
        name=name,
        extra=("-au", "alice", "-ap", PASSWORD, "-auth_uri", f"{DIALLED}@{node.sip_address}"),
    )


@pytest.fixture
def world(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> Iterator[tuple[Node, SippFactory]]:
    supplier = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None, name="supplier")
    node = start_billing_node(
        document(SippFactory.address(supplier)), digest_algorithms=["MD5"], log_level="info"
    )
    _ok(phone_registers(sipp, node, "phone-before"))  # the phone's address is now trusted
    yield node, sipp


def _report(shape: str, tally: Tally) -> None:
    print(
        f"\n{shape}: {tally.attempts} guesses in {tally.seconds:.1f} s, answers "
        f"{dict(sorted(tally.answers.items()))}, the right password got {tally.right_guess_answer}"
    )


# --------------------------------------------------------------------------- the attacks


def test_one_source_is_banned_and_the_right_guess_never_checked(
    world: tuple[Node, SippFactory],
) -> None:
    node, sipp = world
    guesses = dictionary(60, right_at=30, right=PASSWORD)
    tally = attack(node, ["127.0.10.1"], guesses, PASSWORD, workers=1)
    _report("one source", tally)
    assert tally.answers["200"] == 0 and tally.right_guess_answer == "403 at once"
    # Five wrong answers checked, then the source is banned: no challenge, no digest work.
    assert tally.answers["403"] == 5
    assert tally.answers["403 at once"] == 55
    m = metrics(node)
    assert m['smartswitch_digest_failures_total{reason="bad-password"}'] == 5
    assert m["smartswitch_sources_banned"] == 1
    log = node.log_text()
    assert (
        "smartswitch security: auth-failure source=127.0.10.1 account=alice reason=bad-password"
        in log
    )
    assert "smartswitch security: source-banned source=127.0.10.1 seconds=300" in log
    # The phone, at its own address, registers and calls as ever.
    _ok(phone_registers(sipp, node, "phone-after"))
    _ok(phone_calls(sipp, node, "call-after"))


def test_hundreds_of_sources_back_the_account_off_and_the_phone_keeps_working(
    world: tuple[Node, SippFactory],
) -> None:
    """300 addresses, two guesses each (under every per-address limit), 600 guesses at 40 a
    second with the right one late: after 10 failures the account's credentials from new
    addresses are refused unchecked. Meanwhile the phone re-registers and places a call."""
    node, sipp = world
    sources = [f"127.0.{20 + n // 200}.{n % 200 + 1}" for n in range(300)]
    guesses = dictionary(600, right_at=450, right=PASSWORD)
    results: dict[str, Tally] = {}
    attacker = threading.Thread(
        target=lambda: results.setdefault(
            "tally", attack(node, sources, guesses, PASSWORD, rate=40)
        ),
        name="attacker",
    )
    attacker.start()
    try:
        wait_for(
            lambda: metrics(node).get("smartswitch_accounts_under_attack", 0) >= 1,
            30,
            "alice to go into back-off",
        )
        # During the attack: the phone's REGISTER and a call, from its trusted address.
        _ok(phone_registers(sipp, node, "phone-during"))
        _ok(phone_calls(sipp, node, "call-during"))
        assert attacker.is_alive(), "the attack was over before the phone was done"
    finally:
        attacker.join(120)
    tally = results["tally"]
    _report("hundreds of sources", tally)
    assert tally.attempts == 600 and tally.answers["200"] == 0
    assert tally.right_guess_answer == "403"  # refused like any wrong guess, never checked
    m = metrics(node)
    checked = m['smartswitch_digest_failures_total{reason="bad-password"}']
    refused = m['smartswitch_auth_refused_total{reason="account-backoff"}']
    assert checked == 10 and refused == 590, (checked, refused)
    assert m["smartswitch_account_backoffs_total"] == 1
    assert m["smartswitch_sources_banned"] == 0  # nobody over the per-address limit
    log = node.log_text()
    assert "smartswitch security: account-backoff account=alice seconds=60" in log
    assert re.search(
        r"smartswitch security: refused source=127\.0\.\d+\.\d+ account=alice "
        r"reason=account-backoff",
        log,
    )
    [cdr] = node.wait_cdrs(1)
    assert (cdr["subscriber"], cdr["sip_code"]) == ("alice", 200)
