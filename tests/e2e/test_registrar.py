"""The registrar end to end: sipp phones register with digest, a sipp DID provider calls
their DIDs, the switch registers with a sipp supplier registrar (issue 4).

Addresses (every 127.0.0.0/8 address is local): the node 127.0.0.1; phones 127.0.0.2 and
127.0.0.8; the DID provider 127.0.0.7 (a peer with ``deliver_dids``, known by its ACL); the
supplier's registrar 127.0.0.6. The node runs in billing mode with the document below,
provisioned by ``smartswitch provision``, and offers MD5 only (sipp's digest is MD5 only).

The phone is one sipp: its scenario registers and then stays up (``-d``) with its socket open;
the DID call reaches it with a Call-ID of its own, which sipp hands to the out-of-call
scenario (``-oocsf did_phone_answer.xml``) that answers it.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from smartswitch.sip.digest import compute_ha1, compute_response, parse_auth_params

from .conftest import CALLER_IP, SippFactory, StartBillingNode
from .node import Node, wait_for
from .sipp import SCENARIOS, SipMessage, SippResult, Transport, expect_final_scenario

pytestmark = pytest.mark.e2e

PHONE_IP = CALLER_IP  # 127.0.0.2
OTHER_PHONE_IP = "127.0.0.8"
PROVIDER_IP = "127.0.0.7"
REGISTRAR_IP = "127.0.0.6"
DID = "15550001000"
BOB_DID = "15550002000"  # bob never registers
ALICE_PASSWORD = "alice-phone-pass-7"


def document(**peer_extra: Any) -> dict[str, Any]:
    """Subscribers alice and bob with a DID each, and the DID provider."""
    provider: dict[str, Any] = {
        "name": "did-provider",
        "role": "supplier",
        "account": "provider",
        "address": f"{PROVIDER_IP}:5060",
        "acl": [PROVIDER_IP],
        "deliver_dids": True,
    }
    return {
        "accounts": [
            {"name": "alice-acct", "currency": "USD", "balance": "10"},
            {"name": "provider", "currency": "USD"},
        ],
        "tariffs": [{"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.01"}]}],
        "peers": [provider, *peer_extra.get("peers", [])],
        "subscribers": [
            {
                "username": "alice",
                "password": ALICE_PASSWORD,
                "account": "alice-acct",
                "tariff": "retail",
            },
            {"username": "bob", "password": "bob-phone-pass-77", "account": "alice-acct"},
        ],
        "dids": [
            {"number": DID, "subscriber": "alice"},
            {"number": BOB_DID, "subscriber": "bob"},
        ],
    }


def start(
    start_billing_node: StartBillingNode, doc: dict[str, Any] | None = None, **config: Any
) -> Node:
    config.setdefault("digest_algorithms", ["MD5"])
    config.setdefault("log_level", "debug")
    return start_billing_node(doc or document(), **config)


def wait_binding(node: Node, aor: str, timeout: float = 10.0) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((b for b in node.registrations()["bindings"] if b["aor"] == aor), None)

    binding: dict[str, Any] = wait_for(find, timeout, f"a binding of {aor}")
    return binding


def phone(
    sipp: SippFactory,
    pool: ThreadPoolExecutor,
    node: Node,
    user: str = "alice",
    password: str = ALICE_PASSWORD,
    *,
    ip: str = PHONE_IP,
    hold_ms: int = 5000,
    name: str = "phone",
    transport: Transport = "udp",
) -> Future[SippResult]:
    """A phone that registers and stays up ``hold_ms`` to take calls (in a thread: sipp's
    runner waits for it to finish)."""
    return pool.submit(
        sipp.uac,
        node.sip_address,
        "reg_phone",
        ip=ip,
        transport=transport,
        service=user,
        duration_ms=hold_ms,
        name=name,
        timeout_s=hold_ms / 1000 + 20,
        keys={"expires": "600"},
        extra=("-au", user, "-ap", password, "-oocsf", str(SCENARIOS / "did_phone_answer.xml")),
    )


def _ok(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def _invites(result: SippResult) -> list[SipMessage]:
    return result.received_requests("INVITE")


def _shape(message: SipMessage) -> list[tuple[str, str]]:
    """A response without what belongs to its request (Via, Call-ID, CSeq, tags, the user,
    the nonce): what is left must not tell a wrong password from an unknown user."""
    shape = [("status", message.start_line)]
    for name, value in message.header_lines():
        if name in ("via", "call-id", "cseq", "content-length"):
            continue
        value = re.sub(r";tag=[^;>\s]+", ";tag=T", value)
        value = re.sub(r"sip:[\w.-]+@", "sip:USER@", value)
        value = re.sub(r'nonce="[^"]+"', 'nonce="N"', value)
        shape.append((name, value))
    return shape


# --------------------------------------------------------------------------- DIDs


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_phone_registers_and_receives_its_did_call(
    start_billing_node: StartBillingNode, sipp: SippFactory, transport: Transport
) -> None:
    """Over TCP the DID call reaches the phone on the connection its REGISTER came in on."""
    node = start(start_billing_node)
    with ThreadPoolExecutor(1) as pool:
        alice = phone(sipp, pool, node, transport=transport)
        binding = wait_binding(node, "alice")
        assert binding["source"].startswith(f"{transport}:{PHONE_IP}:")
        assert binding["user_agent"] == "sipp-phone"
        assert 590 <= binding["expires_in"] <= 600

        provider = sipp.uac(
            node.sip_address, "uac", ip=PROVIDER_IP, service=DID, duration_ms=500, name="provider"
        )
        _ok(provider)
        result = alice.result()

    [invite] = _invites(result)
    # The B leg's Request-URI is the registered Contact, its To the DID.
    assert invite.start_line.split()[1] == binding["contact"]
    assert DID in (invite.header("to") or "")
    assert any(m.status == 200 and m.direction == "sent" for m in result.messages)
    assert result.received_requests("BYE"), result.describe()

    [cdr] = node.wait_cdrs(1)
    assert (cdr["callee"], cdr["subscriber"], cdr["customer_account"]) == (
        DID,
        "alice",
        "alice-acct",
    )
    assert (cdr["supplier_peer"], cdr["price"], cdr["cost"]) == ("did-provider", "0.0000", "0.0000")
    assert cdr["sip_code"] == 200 and cdr["answer_time"] is not None


def test_unregistered_did_gets_480(
    start_billing_node: StartBillingNode, sipp: SippFactory, tmp_path: Any
) -> None:
    node = start(start_billing_node)
    provider = sipp.uac(
        node.sip_address,
        expect_final_scenario(480, tmp_path / "scenarios"),
        ip=PROVIDER_IP,
        service=BOB_DID,
        name="provider",
    )
    _ok(provider)
    assert provider.received_responses(480)


def test_did_from_a_source_that_does_not_deliver_dids_is_an_ordinary_call(
    start_billing_node: StartBillingNode, sipp: SippFactory, tmp_path: Any
) -> None:
    node = start(start_billing_node)
    with ThreadPoolExecutor(1) as pool:
        alice = phone(sipp, pool, node, hold_ms=3000)
        wait_binding(node, "alice")
        # Not the provider's address: identified (or not) as any caller: challenged.
        stranger = sipp.uac(
            node.sip_address,
            expect_final_scenario(407, tmp_path / "scenarios"),
            ip=OTHER_PHONE_IP,
            service=DID,
            name="stranger",
        )
        _ok(stranger)
        result = alice.result()
    assert _invites(result) == []


# --------------------------------------------------------------------------- defence


def test_wrong_password_is_refused_exactly_like_an_unknown_user(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    node = start(start_billing_node)
    wrong = sipp.uac(
        node.sip_address,
        "reg_refused",
        service="alice",
        extra=("-au", "alice", "-ap", "not-the-password"),
        name="wrong-password",
    )
    unknown = sipp.uac(
        node.sip_address,
        "reg_refused",
        service="mallory",
        extra=("-au", "mallory", "-ap", ALICE_PASSWORD),
        name="unknown-user",
    )
    _ok(wrong)
    _ok(unknown)
    for status in (401, 403):
        [a] = wrong.received_responses(status)
        [b] = unknown.received_responses(status)
        assert _shape(a) == _shape(b), (a.text, b.text)
    assert node.registrations()["bindings"] == []


def test_failure_limit_bans_the_source_not_others(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    node = start(start_billing_node, auth_fail_limit=3, auth_fail_window=60, auth_ban_time=120)
    guesses = sipp.uac(
        node.sip_address,
        "reg_refused",
        service="alice",
        calls=3,
        rate=10,
        extra=("-au", "alice", "-ap", "guess"),
        name="guesses",
    )
    _ok(guesses, 3)
    # The right password now: refused at once (403, no challenge: no digest work spent).
    banned = sipp.uac(
        node.sip_address,
        "reg_banned",
        service="alice",
        extra=("-au", "alice", "-ap", ALICE_PASSWORD),
        name="banned",
    )
    _ok(banned)
    assert not banned.received_responses(401)
    assert PHONE_IP in node.registrations()["bans"]
    # Another source is served as usual.
    with ThreadPoolExecutor(1) as pool:
        other = phone(sipp, pool, node, ip=OTHER_PHONE_IP, hold_ms=200, name="other-phone")
        _ok(other.result())
    assert node.registrations()["bindings"][0]["source"].startswith(f"udp:{OTHER_PHONE_IP}:")


# --------------------------------------------------------------------------- restart


def test_bindings_survive_a_node_restart(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    node = start(start_billing_node)
    with ThreadPoolExecutor(1) as pool:
        alice = phone(sipp, pool, node, hold_ms=15000)
        before = wait_binding(node, "alice")
        time.sleep(1.0)  # the write-behind interval, and some
        assert node.stop() == 0
        node.start()
        after = wait_binding(node, "alice", timeout=2.0)
        assert (after["contact"], after["source"]) == (before["contact"], before["source"])
        provider = sipp.uac(
            node.sip_address, "uac", ip=PROVIDER_IP, service=DID, duration_ms=300, name="provider"
        )
        _ok(provider)
        result = alice.result()
    assert len(_invites(result)) == 1


# --------------------------------------------------------------------------- outbound


def _digest_ok(message: SipMessage, password: str, nc: str) -> bool:
    credentials = message.header("authorization")
    assert credentials is not None, message.text
    _, p = parse_auth_params(credentials)
    assert p["nc"] == nc and p["username"] == "trunk1", credentials
    ha1 = compute_ha1("trunk1", p["realm"], password, "MD5")
    expected = compute_response(
        ha1, p["nonce"], "REGISTER", p["uri"], "MD5", qop="auth", nc=p["nc"], cnonce=p["cnonce"]
    )
    return expected == p["response"]


def test_switch_registers_with_a_supplier_and_refreshes_before_expiry(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> None:
    registrar = sipp.uas(
        "reg_registrar",
        ip=REGISTRAR_IP,
        calls=1,
        keys={"expires": "10"},
        recv_timeout_ms=20000,
        name="registrar",
    )
    address = SippFactory.address(registrar)
    supplier = {
        "name": "carrier-reg",
        "role": "supplier",
        "account": "provider",
        "address": address,
        "register": {
            "username": "trunk1",
            "password": "trunk-pw",
            "registrar": address,
            "expires": 10,
        },
    }
    started = time.monotonic()
    node = start(start_billing_node, document(peers=[supplier]))

    def registered() -> dict[str, Any] | None:
        rows = node.registrations(outbound=True)["registrations"]
        return next((r for r in rows if r["state"] == "registered"), None)

    state = wait_for(registered, 5.0, "the outbound registration")
    assert (state["peer"], state["username"], state["registrar"]) == (
        "carrier-reg",
        "trunk1",
        address,
    )
    assert state["registered_for"] <= 10 and 3 <= state["next_action_in"] <= 5
    assert "trunk-pw" not in json.dumps(state)

    result = registrar.wait(30)
    _ok(result)
    elapsed = time.monotonic() - started
    first, second, refresh = result.received_requests("REGISTER")
    assert first.header("authorization") is None
    assert _digest_ok(second, "trunk-pw", "00000001")
    # The refresh comes before the 10 s are up, with credentials already (the next nc).
    assert _digest_ok(refresh, "trunk-pw", "00000002")
    assert refresh.header("call-id") == first.header("call-id")
    assert 5 <= elapsed < 15, elapsed
