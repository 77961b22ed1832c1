"""The sipp scenarios against each other, without a node.

A scenario that cannot complete a call with its own counterpart would make a
node test fail for the wrong reason; these prove each UAC/UAS pair right
first (sipp UAC -> sipp UAS directly), and check the SIP details the node
tests rely on (CANCEL and non-2xx ACK on the INVITE's branch, the callee's
BYE addressed to the caller's Contact with the right tags). They also prove
the topology-leak check is not vacuous: called directly, the callee does see
the caller's address and Call-ID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import CALLER_IP, SippFactory
from .sipp import SCENARIOS, SipMessage, SippResult, Transport, topology_leaks

pytestmark = pytest.mark.e2e


def _ok(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def _branch(message: SipMessage) -> str:
    via = message.header("via") or ""
    match = re.search(r";branch=([^;,\s]+)", via)
    assert match, f"no branch in {via!r}"
    return match.group(1)


def _only(messages: list[SipMessage], what: str) -> SipMessage:
    assert len(messages) == 1, f"expected one {what}, got {[m.start_line for m in messages]}"
    return messages[0]


def _variant(tmp_path: Path, source: str, old: str, new: str) -> Path:
    """A copy of a scenario with one string replaced (a UAS with another code)."""
    text = (SCENARIOS / f"{source}.xml").read_text()
    assert old in text
    path = tmp_path / f"{source}-variant.xml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_builtin_uac_with_uas_answer(sipp: SippFactory, transport: Transport) -> None:
    # Over TCP the UAC closes its connection when its last call ends, which
    # sipp counts as a failure of the callee's call still in its timewait:
    # there, count what the callee received instead of its statistics.
    calls = 3 if transport == "udp" else None
    uas = sipp.uas("uas_answer", transport=transport, calls=calls)
    uac = sipp.uac(sipp.address(uas), "uac", calls=3, rate=20, transport=transport)
    _ok(uac, 3)
    callee = uas.wait(15) if calls else uas.stop()
    if calls:
        _ok(callee, 3)
    methods = [m.method for m in callee.received]
    assert methods.count("INVITE") == methods.count("ACK") == methods.count("BYE") == 3


def test_callee_hangs_up(sipp: SippFactory) -> None:
    uas = sipp.uas("uas_answer_bye")
    uac = sipp.uac(sipp.address(uas), "uac_wait_bye")
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)

    invite = _only(callee.received_requests("INVITE"), "INVITE")
    bye = _only(uac.received_requests("BYE"), "BYE")
    caller_contact = invite.header("contact") or ""
    assert bye.start_line.split()[1] in caller_contact, (bye.start_line, caller_contact)
    # Dialog identity (RFC 3261 12.2.1.1): From carries the callee's tag, To the caller's.
    assert "SIPpTag01" in (bye.header("from") or "")
    assert (invite.header("from") or "").split("tag=")[1] in (bye.header("to") or "")
    # The 180 carries SDP (early media) for the node to relay.
    ringing = _only(uac.received_responses(180), "180")
    assert "m=audio" in ringing.text


def test_cancel_while_ringing(sipp: SippFactory) -> None:
    uas = sipp.uas("uas_ring_noanswer")
    uac = sipp.uac(sipp.address(uas), "uac_cancel")
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)

    invite = _only(callee.received_requests("INVITE"), "INVITE")
    cancel = _only(callee.received_requests("CANCEL"), "CANCEL")
    ack = _only(callee.received_requests("ACK"), "ACK")
    assert _branch(cancel) == _branch(invite) == _branch(ack)
    final = _only(uac.received_responses(487), "487")
    assert final.header("cseq") == "1 INVITE"
    assert uac.received_responses(200)[0].header("cseq") == "1 CANCEL"


@pytest.mark.parametrize("code", [503, 486])
def test_refusing_callee(sipp: SippFactory, code: int) -> None:
    uas = sipp.uas(f"uas_{code}")
    uac = sipp.uac(sipp.address(uas), f"uac_expect_{code}")
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)
    invite = _only(callee.received_requests("INVITE"), "INVITE")
    ack = _only(callee.received_requests("ACK"), "ACK")
    assert _branch(ack) == _branch(invite)


def test_expect_403(sipp: SippFactory, tmp_path: Path) -> None:
    forbidding = _variant(tmp_path, "uas_503", "503 Service Unavailable", "403 Forbidden")
    uas = sipp.uas(str(forbidding))
    _ok(sipp.uac(sipp.address(uas), "uac_expect_403"))
    _ok(uas.wait(15))


def test_expect_400_for_broken_via(sipp: SippFactory, tmp_path: Path) -> None:
    # A stand-in that answers 400 whatever it gets; sipp itself sends it to
    # the packet's source, as the node must when the Via cannot be used.
    rejecting = _variant(tmp_path, "uas_503", "503 Service Unavailable", "400 Bad Via")
    uas = sipp.uas(str(rejecting), calls=None)
    uac = sipp.uac(sipp.address(uas), "uac_malformed_via")
    _ok(uac)
    assert _only(uac.received_responses(400), "400").reason == "Bad Via"
    invite = _only(uas.stop().received_requests("INVITE"), "INVITE")
    assert ":50x6O;" in (invite.header("via") or "")


def test_options(sipp: SippFactory, tmp_path: Path) -> None:
    # sipp's own scenarios do not answer OPTIONS; a two-line stand-in does.
    answering = tmp_path / "uas_options.xml"
    answering.write_text(
        (SCENARIOS / "uas_503.xml")
        .read_text()
        .replace('request="INVITE"', 'request="OPTIONS"')
        .replace("503 Service Unavailable", "200 OK")
        .replace('<send retrans="500">', "<send>")
        .replace('<recv request="ACK" crlf="true"/>', "")
    )
    uas = sipp.uas(str(answering))
    _ok(sipp.uac(sipp.address(uas), "uac_options"))
    _ok(uas.wait(15))


def test_topology_check_sees_a_direct_call(sipp: SippFactory) -> None:
    """Called directly, the callee sees the caller's address and Call-ID: the
    check that the node must make fail does find them."""
    uas = sipp.uas("uas_topology")
    uac = sipp.uac(sipp.address(uas), "uac_topology")
    _ok(uac)
    callee = uas.wait(15)
    _ok(callee)

    caller_call_ids = {m.call_id for m in uac.sent if m.call_id}
    assert caller_call_ids
    leaks = topology_leaks(callee.received, [CALLER_IP, *caller_call_ids])
    leaked = " ".join(leaks)
    for header in ("via:", "contact:", "call-id:", "record-route:"):
        assert header in leaked, leaks
    # And the other way: the caller sees the callee's Record-Route and Contact.
    assert topology_leaks(uac.received, ["127.0.0.3"]), uac.describe()
