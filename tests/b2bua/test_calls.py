"""The B2BUA driven through the real SIP application with bytes and a virtual clock.

Alice (the caller) calls through the switch; Bob, then Carol, are the destinations the policy
gives. Every message is built as a phone would build it and parsed from what the switch sent.
"""

from __future__ import annotations

import gc
import types
from collections import Counter
from collections.abc import Callable

from smartswitch.b2bua.engine import B2buaSettings
from smartswitch.b2bua.ports import CallAttempt
from smartswitch.model.cdr import HangupSide
from smartswitch.sip.message import Request, Response
from smartswitch.sip.timers import COMPACT_MIN
from smartswitch.sip.transaction import T1, Address

from .harness import ALICE, BOB, CAROL, SDP, Calls, Phone, Switch, connect

ANSWER = SDP.replace(b"192.0.2.10", b"192.0.2.20")


def _setup(
    *destinations: Phone | None,
    fork: bool = False,
    hold: bool = False,
    settings: B2buaSettings | None = None,
) -> tuple[Switch, Calls, Phone, Phone, Phone]:
    calls = Calls((BOB, CAROL), fork=fork, hold=hold)
    switch = Switch(calls, settings)
    return (
        switch,
        calls,
        Phone(switch, ALICE, "alice"),
        Phone(switch, BOB, "bob"),
        Phone(switch, CAROL, "carol"),
    )


def _statuses(attempts: tuple[CallAttempt, ...]) -> list[tuple[str, int]]:
    return [(a.destination.label, a.status) for a in attempts]


# --- hanging up -------------------------------------------------------------------------------


def test_bye_from_the_caller() -> None:
    switch, calls, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    switch.now = 61.0
    alice.request("BYE")
    assert switch.responses(ALICE) == [200]
    bye = switch.request(BOB, "BYE")
    assert alice.invite is not None and bye.call_id != alice.invite.call_id  # two dialogs
    bob.answer(bye, 200)
    assert switch.take_all() == []
    summary = calls.session.summary
    assert (summary.hangup_side, summary.hangup_reason) == (HangupSide.CALLER, "bye")
    assert (summary.status, summary.duration) == (200, 61.0)
    assert not switch.b2bua.calls and not switch.b2bua.dialogs


def test_bye_from_the_callee() -> None:
    switch, calls, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    switch.now = 30.0
    bob.request("BYE")
    assert switch.responses(BOB) == [200]
    bye = switch.request(ALICE, "BYE")
    assert alice.dialog is not None
    assert (bye.to.tag, bye.from_.tag) == (alice.tag, alice.dialog.remote_tag)
    alice.answer(bye, 200)
    assert switch.take_all() == []
    assert calls.session.summary.hangup_side is HangupSide.CALLEE


def test_the_end_of_a_call_waits_until_its_record_is_durable() -> None:
    """The BYE's 200 and the BYE to the other leg are held back until the policy calls
    ``done``; then they leave at the time they are released."""
    switch, calls, alice, bob, _ = _setup(hold=True)
    connect(switch, alice, bob)
    switch.now = 10.0
    alice.request("BYE")
    assert switch.take_all() == []
    assert calls.session.summary.end_time == 10.0
    switch.now = 10.2
    (done,) = calls.session.held
    done()
    assert switch.responses(ALICE) == [200]
    bob.answer(switch.request(BOB, "BYE"), 200)
    done()  # a second call changes nothing
    assert switch.take_all() == []


def _reaches(root: object, target: object) -> bool:
    """Whether ``target`` can be reached from ``root`` by following references (leaving out
    modules, classes and functions' globals, which every object reaches)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if obj is target:
            return True
        if id(obj) in seen or isinstance(obj, type | types.ModuleType):
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            todo.extend(obj.__closure__ or ())
            todo.extend(obj.__defaults__ or ())
        else:
            todo.extend(gc.get_referents(obj))
    return False


def test_an_ended_call_is_not_kept_by_its_lingering_transactions() -> None:
    """After the BYE and its 200, the call's transactions linger up to 64*T1 (RFC 3261 17,
    RFC 6026) to answer retransmissions, and they do, as before; but nothing the switch holds
    reaches the call any more (its legs, dialogs, session, requests): it goes with its last
    reference, not after 32 s and a full garbage collection."""
    switch, _, alice, bob, _ = _setup()
    invite_in = alice.call()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 200, ANSWER)
    ack = switch.request(BOB, "ACK")
    ok = switch.final(ALICE)
    alice.connected(ok)
    (call,) = switch.b2bua.calls.values()
    assert _reaches(switch, call)  # the walk finds it while it lives
    switch.now = 1.0
    bye_in = alice.request("BYE")
    assert switch.responses(ALICE) == [200]
    bye = switch.request(BOB, "BYE")
    bob.answer(bye, 200)
    switch.advance(2.0)
    # Lingering: the caller's INVITE (Timer L) and BYE (J), ours to Bob (M) and BYE (K), as
    # ghosts (not even an owner of their own: the ACK to send again is the layer's).
    layer = switch.layer
    assert (len(layer.server_ghosts), len(layer.client_ghosts)) == (2, 2)
    assert not layer.server and not layer.client
    assert not _reaches(switch, call)

    switch.receive(bye_in.to_bytes(), ALICE)  # our 200 was lost
    assert switch.responses(ALICE) == [200]
    switch.receive(invite_in.to_bytes(), ALICE)  # still in flight: absorbed
    bob.answer(bye, 200)  # absorbed
    alice.ack(ok)  # no dialog any more: dropped
    assert switch.take_all() == []
    bob.answer(invite, 200, ANSWER)  # our ACK was lost: the same one again
    assert switch.request(BOB, "ACK").to_bytes() == ack.to_bytes()
    assert switch.take_all() == [] and not _reaches(switch, call)
    switch.advance(1.0 + 64 * T1)
    assert not layer.server_ghosts and not layer.client_ghosts


def _cyclic_garbage(run: Callable[[], None]) -> list[object]:
    """What ``run`` leaves that only the garbage collector frees (reference cycles)."""
    gc.collect()
    gc.disable()  # an automatic collection during ``run`` would hide its cycles
    try:
        run()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_an_ended_call_is_freed_by_refcounting_not_the_collector() -> None:
    """Legs point back at their call: left so, every ended call would wait for a full
    collection, which at hundreds of calls a second came every few seconds and stopped the
    node for tens of milliseconds (issue 13). Hung up by either side, nothing of a call is
    left in a reference cycle."""
    switch, _, _, _, _ = _setup()

    def calls() -> None:
        for n, hangs_up in enumerate(("caller", "callee") * 3):
            alice, bob = Phone(switch, ALICE, f"alice{n}"), Phone(switch, BOB, f"bob{n}")
            connect(switch, alice, bob)
            switch.now += 5.0
            if hangs_up == "caller":
                alice.request("BYE")
                bob.answer(switch.request(BOB, "BYE"), 200)
            else:
                bob.request("BYE")
                alice.answer(switch.request(ALICE, "BYE"), 200)
            assert switch.responses(ALICE if hangs_up == "caller" else BOB) == [200]
        switch.sent.clear()
        assert not switch.b2bua.calls

    kinds = Counter(type(o).__qualname__ for o in _cyclic_garbage(calls))
    assert not {"Call", "Leg", "Dialog", "Request", "Session"} & set(kinds), kinds


def test_a_relayed_reinvite_does_not_keep_the_ended_call_either() -> None:
    """Our re-INVITE to Bob lingers until Timer M after its 2xx, relayed: its owner (the
    relay, and so the call) is let go of once the caller's ACK is relayed. Its 2xx again
    before that is absorbed (the caller's 2xx is resent by its own transaction); after it,
    our ACK was lost and Bob gets the same one again (RFC 3261 13.2.2.4), or he would end
    the call when his Timer H fires."""
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    (call,) = switch.b2bua.calls.values()
    alice.request("INVITE", SDP)
    out = switch.request(BOB, "INVITE")
    bob.answer(out, 200, ANSWER)
    ok = switch.final(ALICE)
    bob.answer(out, 200, ANSWER)  # before the caller's ACK: absorbed
    assert switch.take_all() == []
    alice.ack(ok)
    ack = switch.request(BOB, "ACK")
    assert ack.cseq.number == 2
    bob.answer(out, 200, ANSWER)  # our ACK was lost
    assert switch.request(BOB, "ACK").to_bytes() == ack.to_bytes()
    assert switch.take_all() == []
    alice.request("BYE")
    assert switch.responses(ALICE) == [200]
    bob.answer(switch.request(BOB, "BYE"), 200)
    assert len(switch.layer.client_ghosts) == 3  # the two INVITEs to Bob (Timer M), the BYE
    assert not _reaches(switch, call)


def test_the_timers_ended_calls_cancelled_do_not_pile_up() -> None:
    """A call cancels timers due long after its end (its maximum duration, hours ahead; Timer
    B, 32 s ahead): call after call, the heap keeps fewer cancelled entries than live ones,
    past a floor, instead of every one until its deadline."""
    switch, _, _, _, _ = _setup()
    for n in range(400):
        alice, bob = Phone(switch, ALICE, f"alice{n}"), Phone(switch, BOB, f"bob{n}")
        connect(switch, alice, bob)
        alice.request("BYE")
        bob.answer(switch.request(BOB, "BYE"), 200)
        switch.take_all()
        switch.advance(switch.now + 1.0)
    timers = switch.layer.timers
    assert 0 < len(timers) < 4 * 64 * T1  # those of the transactions still lingering
    assert timers.entries <= max(2 * len(timers), len(timers) + COMPACT_MIN)


# --- re-INVITEs and other in-dialog requests ----------------------------------------------------


def test_reinvite_from_the_caller_is_relayed_and_its_ack_follows_with_the_callees_cseq() -> None:
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    assert alice.dialog is not None
    alice.dialog.local_seq = 20  # CSeq numbers differ on the two sides
    reinvite = alice.request("INVITE", SDP)
    assert switch.responses(ALICE) == [100]
    out = switch.request(BOB, "INVITE")
    assert (out.cseq.number, out.body) == (2, SDP)
    assert out.call_id != reinvite.call_id
    bob.answer(out, 200, ANSWER)
    ok = switch.final(ALICE)
    assert (ok.status, ok.cseq.number, ok.body) == (200, 21, ANSWER)
    assert ok.headers.get("contact") == f"<{alice.dialog.remote_target}>"  # the switch's
    alice.ack(ok)
    ack = switch.request(BOB, "ACK")
    assert (ack.cseq.number, ack.cseq.method) == (2, "ACK")
    assert (ack.to.tag, ack.from_.tag) == (bob.tag, out.from_.tag)
    switch.advance(64 * T1)
    assert switch.take_all() == []  # the ACKed 200 is not sent again (RFC 3261 13.3.1.4)


def test_reinvite_from_the_callee_is_relayed_and_its_ack_follows_with_the_callers_cseq() -> None:
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    assert bob.dialog is not None
    bob.dialog.local_seq = 100
    bob.request("INVITE", ANSWER)
    assert switch.responses(BOB) == [100]
    out = switch.request(ALICE, "INVITE")
    assert (out.cseq.number, out.to.tag, out.body) == (1, alice.tag, ANSWER)
    alice.answer(out, 200, SDP)
    ok = switch.final(BOB)
    assert (ok.status, ok.cseq.number, ok.body) == (200, 101, SDP)
    bob.ack(ok)
    ack = switch.request(ALICE, "ACK")
    assert (ack.cseq.number, ack.to.tag) == (1, alice.tag)
    switch.advance(64 * T1)
    assert switch.take_all() == []


def test_a_relayed_reinvite_200_is_resent_until_its_ack() -> None:
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    alice.request("INVITE", SDP)
    switch.take(ALICE)
    bob.answer(switch.request(BOB, "INVITE"), 200, ANSWER)
    ok = switch.final(ALICE)
    switch.advance(switch.now + 2 * T1)  # the 200 lost: sent again at T1, then 2*T1 later
    assert switch.responses(ALICE) == [200]
    alice.ack(ok)
    assert switch.request(BOB, "ACK").cseq.number == 2
    switch.advance(64 * T1)
    assert switch.take_all() == []


def test_reinvite_refused_by_the_other_side_is_relayed() -> None:
    switch, calls, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    alice.request("INVITE", SDP)
    switch.take(ALICE)
    bob.answer(switch.request(BOB, "INVITE"), 488)  # the switch ACKs Bob's 488 itself
    assert switch.request(BOB, "ACK").cseq.number == 2
    assert switch.final(ALICE).status == 488
    assert switch.b2bua.calls  # the call goes on
    assert calls.session.summaries == []


def test_delayed_offer_the_callers_ack_carries_the_answer_to_the_callee() -> None:
    switch, _, alice, bob, _ = _setup()
    alice.call(body=b"")
    invite = switch.request(BOB, "INVITE")
    assert invite.body == b""
    bob.answer(invite, 200, ANSWER)  # the offer, in the 200
    assert switch.take(BOB) == []  # no ACK yet: it must carry the caller's answer
    ok = switch.final(ALICE)
    assert ok.body == ANSWER
    bob.answer(invite, 200, ANSWER)  # Bob retransmits: still nothing to send him
    assert switch.take(BOB) == []
    alice.connected(ok, SDP)
    ack = switch.request(BOB, "ACK")
    assert (ack.cseq.number, ack.body) == (1, SDP)
    assert ack.headers.get("content-type") == "application/sdp"
    bob.answer(invite, 200, ANSWER)  # our ACK was lost: the same one again
    assert switch.request(BOB, "ACK").to_bytes() == ack.to_bytes()


def test_info_and_update_are_relayed_both_ways() -> None:
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    info = alice.request("INFO", b"Signal=5\r\nDuration=160\r\n")
    out = switch.request(BOB, "INFO")
    assert (out.body, out.call_id == info.call_id) == (info.body, False)
    assert [v.host for v in out.vias] == ["198.51.100.1"]  # none of Alice's side
    bob.answer(out, 200)
    assert switch.responses(ALICE) == [200]

    bob.request("UPDATE", ANSWER)
    out = switch.request(ALICE, "UPDATE")
    assert out.body == ANSWER and out.to.tag == alice.tag
    alice.answer(out, 200, SDP)
    ok = switch.final(BOB, "UPDATE")
    assert (ok.status, ok.cseq.method, ok.body) == (200, "UPDATE", SDP)
    assert switch.take_all() == []


def test_in_dialog_request_for_no_dialog_gets_481() -> None:
    switch, _, alice, bob, _ = _setup()
    connect(switch, alice, bob)
    assert alice.dialog is not None
    alice.dialog.remote_tag = "gone"
    alice.request("INFO")
    assert switch.responses(ALICE) == [481]


# --- CANCEL -----------------------------------------------------------------------------------


def test_cancel_while_ringing() -> None:
    switch, calls, alice, bob, _ = _setup()
    alice.call()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 180)
    switch.now = 3.0
    alice.cancel()
    # 100 and 180 to the INVITE, 200 to the CANCEL, then 487 to the INVITE.
    assert switch.responses(ALICE) == [100, 180, 200, 487]
    cancel = switch.request(BOB, "CANCEL")
    assert (cancel.cseq.number, cancel.top_via.branch) == (1, invite.top_via.branch)
    bob.answer(cancel, 200)
    bob.answer(invite, 487)
    assert switch.request(BOB, "ACK").cseq.method == "ACK"  # ACKed in its transaction
    summary = calls.session.summary
    assert (summary.status, summary.hangup_side, summary.hangup_reason) == (
        487,
        HangupSide.CALLER,
        "cancel",
    )
    assert _statuses(summary.attempts) == [("peer0", 487)]
    assert summary.answered is None


def test_cancel_before_the_callee_was_heard_is_sent_once_it_rings() -> None:
    """RFC 3261 9.1: no CANCEL before a provisional response; the one that comes later gets
    it (a 100 Trying does not count: it is the transaction's, not the callee's)."""
    switch, calls, alice, bob, _ = _setup()
    alice.call()
    invite = switch.request(BOB, "INVITE")
    alice.cancel()
    assert switch.final(ALICE).status == 487
    assert switch.take(BOB) == []
    bob.answer(invite, 180)
    cancel = switch.request(BOB, "CANCEL")
    bob.answer(cancel, 200)
    bob.answer(invite, 487)
    assert switch.take(ALICE) == []  # nothing more for the caller
    assert calls.session.summary.status == 487


def test_cancel_crossing_a_200_the_late_200_is_acked_and_byed() -> None:
    switch, calls, alice, bob, _ = _setup()
    alice.call()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 180)
    alice.cancel()
    cancel = switch.request(BOB, "CANCEL")
    bob.answer(invite, 200, ANSWER)  # sent before Bob saw the CANCEL
    bob.answer(cancel, 200)
    sent = switch.take(BOB)
    assert [m.method for m in sent if isinstance(m, Request)] == ["ACK", "BYE"]
    ack, bye = (m for m in sent if isinstance(m, Request))
    assert ack.cseq.number == 1 and bye.cseq.number == 2
    assert ack.call_id == bye.call_id == invite.call_id and bye.to.tag == bob.tag
    bob.answer(bye, 200)
    assert switch.responses(ALICE) == [100, 180, 200, 487]  # the caller never sees Bob's 200
    summary = calls.session.summary
    assert (summary.status, summary.answer_time, summary.answered) == (487, None, None)
    assert calls.session.answers == []


def test_cancel_while_forking_cancels_every_fork() -> None:
    switch, calls, alice, bob, carol = _setup(fork=True)
    alice.call()
    to_bob = switch.request(BOB, "INVITE")
    to_carol = switch.request(CAROL, "INVITE")
    assert to_bob.call_id != to_carol.call_id  # a B leg each
    bob.answer(to_bob, 180)
    carol.answer(to_carol, 183)
    alice.cancel()
    assert switch.responses(ALICE)[-2:] == [200, 487]
    for phone, invite in ((bob, to_bob), (carol, to_carol)):
        cancel = switch.request(phone.address, "CANCEL")
        assert cancel.call_id == invite.call_id
        phone.answer(cancel, 200)
        phone.answer(invite, 487)
    summary = calls.session.summary
    assert _statuses(summary.attempts) == [("peer0", 487), ("peer1", 487)]


def test_forking_first_answer_wins_the_other_is_cancelled_and_its_late_200_byed() -> None:
    switch, calls, alice, bob, carol = _setup(fork=True)
    alice.call()
    to_bob = switch.request(BOB, "INVITE")
    to_carol = switch.request(CAROL, "INVITE")
    bob.answer(to_bob, 180)
    carol.answer(to_carol, 180)
    carol.answer(to_carol, 200, ANSWER)
    assert switch.final(ALICE).status == 200
    cancel = switch.request(BOB, "CANCEL")
    bob.answer(cancel, 200)
    bob.answer(to_bob, 200, ANSWER)  # too late
    sent = [m.method for m in switch.take(BOB) if isinstance(m, Request)]
    assert sent == ["ACK", "BYE"]
    (answer,) = calls.session.answers
    assert (answer.index, answer.destination.label) == (1, "peer1")


# --- failures and hunting ---------------------------------------------------------------------


def test_503_advances_to_the_next_destination() -> None:
    switch, calls, alice, bob, carol = _setup()
    alice.call()
    bob.answer(switch.request(BOB, "INVITE"), 503)
    assert switch.request(BOB, "ACK").cseq.method == "ACK"
    assert switch.responses(ALICE) == [100]  # the caller hears nothing of it
    to_carol = switch.request(CAROL, "INVITE")
    switch.now = 0.4
    carol.answer(to_carol, 200, ANSWER)
    assert switch.final(ALICE).status == 200
    (answer,) = calls.session.answers
    assert (answer.index, answer.ended) == (1, 0.4)
    switch.now = 5.0
    switch.b2bua.hangup(next(iter(switch.b2bua.calls)), switch.now)
    summary = calls.session.summary
    assert _statuses(summary.attempts) == [("peer0", 503), ("peer1", 200)]
    assert summary.answered == summary.attempts[1]
    assert summary.duration == 4.6


def test_486_does_not_advance() -> None:
    switch, calls, alice, bob, _ = _setup()
    alice.call()
    bob.answer(switch.request(BOB, "INVITE"), 486)
    assert switch.request(BOB, "ACK").cseq.method == "ACK"
    final = switch.final(ALICE)
    assert final.status == 486
    assert switch.take(CAROL) == []
    summary = calls.session.summary
    assert (summary.status, summary.hangup_side, summary.hangup_reason) == (
        486,
        HangupSide.CALLEE,
        "rejected",
    )
    assert _statuses(summary.attempts) == [("peer0", 486)]
    alice.ack_failure(final)  # the caller's ACK ends the 486's retransmissions
    switch.advance(64 * T1)
    assert switch.take_all() == []


def test_every_destination_failing_is_503() -> None:
    switch, calls, alice, bob, carol = _setup()
    alice.call()
    bob.answer(switch.request(BOB, "INVITE"), 503)
    carol.answer(switch.request(CAROL, "INVITE"), 500)
    assert switch.final(ALICE).status == 503
    summary = calls.session.summary
    assert (summary.hangup_side, summary.hangup_reason) == (HangupSide.SWITCH, "no route left")


def test_no_answer_cancels_and_advances() -> None:
    switch, calls, alice, bob, carol = _setup()
    alice.call()
    to_bob = switch.request(BOB, "INVITE")
    bob.answer(to_bob, 180)
    switch.advance(30.0)  # the no-answer timer: 408 advances
    bob.answer(switch.request(BOB, "CANCEL"), 200)
    bob.answer(to_bob, 487)
    carol.answer(switch.request(CAROL, "INVITE"), 486)
    assert switch.final(ALICE).status == 486
    assert _statuses(calls.session.summary.attempts) == [("peer0", 408), ("peer1", 486)]


def _pings(switch: Switch, phone: Phone) -> list[Request]:
    """The in-dialog OPTIONS the switch sent to ``phone`` since last asked, each once
    (retransmissions left out); what else it sent there is taken too."""
    pings: dict[int, Request] = {}
    for m in switch.take(phone.address):
        if isinstance(m, Request) and m.method == "OPTIONS":
            pings.setdefault(m.cseq.number, m)
    return list(pings.values())


def _answer_pings(switch: Switch, *phones: Phone) -> None:
    """Each of ``phones`` answers 200 to the one ping the switch sent it since last asked."""
    for phone in phones:
        (ping,) = _pings(switch, phone)
        phone.answer(ping, 200)


def _byes(switch: Switch) -> list[Address]:
    """Where the switch sent BYEs since last asked; all else it sent is taken too."""
    return [d for m, d in switch.take_all() if isinstance(m, Request) and m.method == "BYE"]


def test_a_leg_that_stops_answering_pings_ends_the_call() -> None:
    """Both legs are pinged every ``dialog_ping_interval``; the callee answers one ping, not
    the next: ``dialog_ping_timeout`` after that one (well before Timer F) the call ends, with
    a BYE to each leg."""
    settings = B2buaSettings(dialog_ping_interval=10.0, dialog_ping_timeout=4.0)
    switch, calls, alice, bob, _ = _setup(settings=settings)
    connect(switch, alice, bob)
    switch.advance(10.0)
    _answer_pings(switch, alice, bob)
    switch.advance(19.9)
    assert _byes(switch) == []  # answered pings end nothing
    switch.advance(20.0)
    _answer_pings(switch, alice)
    assert len(_pings(switch, bob)) == 1  # Bob stays silent
    switch.advance(23.9)
    assert _byes(switch) == [] and switch.b2bua.calls
    switch.advance(24.0)
    assert sorted(_byes(switch)) == sorted([ALICE, BOB])
    summary = calls.session.summary
    assert (summary.hangup_side, summary.hangup_reason) == (
        HangupSide.SWITCH,
        "leg not responding",
    )
    assert summary.duration == 24.0


def test_a_ping_answered_late_is_not_taken_for_the_next_one() -> None:
    """A ping slower than the interval: the next goes only once it is answered, and the
    deadline of an answered ping never fires for the one after it."""
    settings = B2buaSettings(dialog_ping_interval=3.0, dialog_ping_timeout=4.0)
    switch, calls, alice, bob, _ = _setup(settings=settings)
    connect(switch, alice, bob)
    switch.advance(3.0)
    _answer_pings(switch, alice, bob)
    switch.advance(6.0)  # the second pings; the first ones' deadlines (7) must be off
    switch.now = 6.5
    _answer_pings(switch, alice)
    switch.advance(9.9)
    _answer_pings(switch, alice)
    assert len(_pings(switch, bob)) == 1  # his second, still out: no third meanwhile
    assert _byes(switch) == [] and switch.b2bua.calls
    switch.advance(10.0)  # Bob's second ping, 4 s unanswered
    assert BOB in _byes(switch)
    assert calls.session.summary.hangup_reason == "leg not responding"


def test_a_call_that_ends_leaves_no_ping_deadline() -> None:
    settings = B2buaSettings(dialog_ping_interval=10.0, dialog_ping_timeout=4.0)
    switch, calls, alice, bob, _ = _setup(settings=settings)
    connect(switch, alice, bob)
    switch.advance(10.0)  # pings neither answers
    (call,) = switch.b2bua.calls.values()
    deadlines = [leg.ping_timer for leg in (call.a_leg, call.b_leg) if leg is not None]
    assert [t.deadline for t in deadlines if t is not None] == [14.0, 14.0]
    switch.now = 11.0
    alice.request("BYE")
    bob.answer(switch.request(BOB, "BYE"), 200)
    assert calls.session.summary.hangup_reason == "bye"
    # Cancelled with the call: they do not hold it (and its dialogs) until they come due.
    assert all(t is not None and t.cancelled and t.args == () for t in deadlines)


def test_a_200_the_caller_never_acks_ends_the_call() -> None:
    """The caller never ACKs the 200 (64*T1): the call is hung up (RFC 3261 13.3.1.4)."""
    switch, calls, alice, bob, _ = _setup()
    alice.call()
    bob.answer(switch.request(BOB, "INVITE"), 200, ANSWER)
    assert switch.final(ALICE).status == 200
    switch.advance(64 * T1)
    retransmitted = switch.take(ALICE)
    assert {m.status for m in retransmitted if isinstance(m, Response)} == {200}
    assert any(isinstance(m, Request) and m.method == "BYE" for m in retransmitted)
    assert calls.session.summary.hangup_reason == "no ACK"
