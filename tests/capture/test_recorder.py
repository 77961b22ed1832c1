"""The recorder: which calls are captured, and what a captured call's job holds."""

from __future__ import annotations

import pytest

from smartswitch.capture.pcap import CapturedMessage
from smartswitch.capture.recorder import (
    CaptureMode,
    CapturePolicy,
    CaptureRecorder,
    call_id_of,
)

from .calls import A_CALL_ID, B_CALL_ID, two_leg_call
from .fakes import ListHep, ListSink

CUSTOMER, SUPPLIER, OTHER = 11, 22, 33
ALL = CapturePolicy(CaptureMode.ALL)


def play(
    recorder: CaptureRecorder,
    messages: list[CapturedMessage] | None = None,
    customer: int = CUSTOMER,
    supplier: int = SUPPLIER,
    name: str = "cdr1",
    now: float = 100.0,
) -> list[CapturedMessage]:
    """What a B2BUA and its transport do for one call: start on the A leg's INVITE, add the B
    leg before its INVITE is sent, report every message, end when the CDR is made (here after
    the last message)."""
    messages = two_leg_call() if messages is None else messages
    recorder.start(A_CALL_ID, now, customer=customer)
    for index, wire in enumerate(messages):
        if index == 2:
            recorder.add_leg(A_CALL_ID, B_CALL_ID, supplier=supplier)
        recorder.message(wire.transport, wire.src, wire.dst, wire.data, wire.time)
    recorder.end(A_CALL_ID, name, now + 33)
    return messages


def test_an_answered_call_goes_to_the_sink_after_its_linger() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=4.0)
    messages = play(recorder, now=100.0)
    assert sink.jobs == []  # lingering: the last messages may still be on their way
    recorder.poll(136.9)
    assert sink.jobs == []
    recorder.poll(137.0)
    (job,) = sink.jobs
    assert (job.name, job.correlation_id) == ("cdr1", A_CALL_ID)
    assert job.captured() == messages
    assert recorder.calls_active == 0
    assert recorder.stats().calls_captured == 1


def test_messages_during_the_linger_are_kept_and_after_it_dropped() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=2.0)
    messages = two_leg_call()
    play(recorder, messages[:-2], now=0.0)  # ended on the BYE, before the 200s
    for wire in messages[-2:]:
        recorder.message(wire.transport, wire.src, wire.dst, wire.data, wire.time)
    recorder.poll(35.0)
    late = messages[-1]  # a retransmission after the call was written: nobody wants it
    recorder.message(late.transport, late.src, late.dst, late.data, late.time + 1)
    (job,) = sink.jobs
    assert job.captured() == messages


def test_messages_reported_out_of_order_are_written_in_time_order() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=0)
    messages = two_leg_call()
    # The transport reports a received message after the core handled it: the 100 it caused
    # comes first.
    shuffled = [messages[1], messages[0], *messages[2:]]
    play(recorder, shuffled)
    assert sink.jobs[0].captured() == messages


def test_mode_off_captures_nothing_and_costs_nothing() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(CapturePolicy(), sink, linger=0)
    assert recorder.start(A_CALL_ID, 0.0, customer=CUSTOMER) is False
    play(recorder)
    assert sink.jobs == []
    assert recorder.calls_active == 0


def test_selected_customer() -> None:
    policy = CapturePolicy(CaptureMode.SELECTED, customers=frozenset({CUSTOMER}))
    sink = ListSink()
    recorder = CaptureRecorder(policy, sink, linger=0)
    assert recorder.start("other-call", 0.0, customer=OTHER) is False
    play(recorder, customer=CUSTOMER)
    assert len(sink.jobs) == 1 and len(sink.jobs[0].messages) == 14


def test_selected_supplier_captures_the_whole_call_from_its_first_message() -> None:
    policy = CapturePolicy(CaptureMode.SELECTED, suppliers=frozenset({SUPPLIER}))
    sink, hep = ListSink(), ListHep()
    recorder = CaptureRecorder(policy, sink, hep, linger=0)
    messages = play(recorder, customer=OTHER, supplier=SUPPLIER)
    (job,) = sink.jobs
    assert job.captured() == messages  # the A leg's INVITE and 100 included
    # HEP got the two messages from before the decision too, in order.
    assert [sent[4] for sent in hep.sent_messages] == [m.data for m in messages]


def test_a_call_to_an_unselected_supplier_is_dropped() -> None:
    policy = CapturePolicy(CaptureMode.SELECTED, suppliers=frozenset({SUPPLIER}))
    sink, hep = ListSink(), ListHep()
    recorder = CaptureRecorder(policy, sink, hep, linger=0)
    assert recorder.start(A_CALL_ID, 0.0, customer=OTHER) is True  # tentative
    play(recorder, customer=OTHER, supplier=OTHER)
    assert sink.jobs == [] and hep.sent_messages == []
    assert recorder.calls_active == 0
    assert recorder.stats().calls_captured == 0


def test_hep_gets_every_message_of_both_legs_with_one_correlation_id() -> None:
    sink, hep = ListSink(), ListHep()
    recorder = CaptureRecorder(ALL, sink, hep, linger=0)
    messages = play(recorder)
    assert [(s[1], s[2], s[3], s[4], s[5]) for s in hep.sent_messages] == [
        (m.transport, m.src, m.dst, m.data, m.time) for m in messages
    ]
    assert {sent[0] for sent in hep.sent_messages} == {A_CALL_ID.encode()}
    assert recorder.stats().hep_sent == 14


def test_other_calls_messages_are_ignored() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=0)
    recorder.start(A_CALL_ID, 0.0)
    stranger = two_leg_call()[0].data.replace(A_CALL_ID.encode(), b"someone-else")
    recorder.message("udp", ("127.0.0.9", 5060), ("127.0.0.1", 5060), stranger, 1.0)
    recorder.message("udp", ("127.0.0.9", 5060), ("127.0.0.1", 5060), b"\r\n\r\n", 1.0)
    recorder.end(A_CALL_ID, "x", 1.0)
    assert sink.jobs[0].messages == ()


def test_a_call_over_its_message_cap_drops_the_rest() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=0, max_messages=10)
    play(recorder)
    assert len(sink.jobs[0].messages) == 10
    assert recorder.stats().messages_dropped == 4


def test_error_state_skips_new_calls_but_hep_goes_on() -> None:
    sink, hep = ListSink(), ListHep()
    sink.error = "cannot write captures to /x: No space left on device"
    recorder = CaptureRecorder(ALL, sink, linger=0)
    assert recorder.start("another", 0.0) is False
    assert recorder.calls_active == 0  # not even tracked
    play(recorder)
    assert sink.jobs == []
    assert recorder.stats().calls_skipped == 2

    recorder = CaptureRecorder(ALL, sink, hep, linger=0)
    play(recorder)
    assert sink.jobs == []
    assert len(hep.sent_messages) == 14
    stats = recorder.stats()
    assert stats.calls_skipped == 1 and stats.error == sink.error

    sink.error = None  # the writer recovered: the next call is captured again
    play(recorder, name="cdr2")
    assert [job.name for job in sink.jobs] == ["cdr2"]


def test_a_call_under_way_when_the_error_starts_still_goes_to_the_sink() -> None:
    # The writer decides (it drops the job while in error, counting its messages).
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=0)
    recorder.start(A_CALL_ID, 0.0)
    sink.error = "full"
    recorder.end(A_CALL_ID, "cdr1", 1.0)
    assert len(sink.jobs) == 1


def test_discard_and_close() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=10)
    recorder.start("gone", 0.0)
    recorder.discard("gone")
    recorder.start("ended", 0.0)
    recorder.end("ended", "cdr-ended", 1.0)
    recorder.start("open", 0.0)
    assert recorder.calls_active == 2
    recorder.close()
    assert [job.name for job in sink.jobs] == ["cdr-ended"]
    assert recorder.calls_active == 0 and list(recorder.active_call_ids()) == []


def test_start_twice_is_one_call_and_a_reused_call_id_gets_a_new_call() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=10)
    recorder.start(A_CALL_ID, 0.0)
    recorder.start(A_CALL_ID, 0.0)
    assert recorder.calls_active == 1
    recorder.end(A_CALL_ID, "first", 1.0)
    recorder.start(A_CALL_ID, 2.0)  # lingering: the first call is written now
    assert [job.name for job in sink.jobs] == ["first"]
    recorder.end(A_CALL_ID, "second", 3.0)
    recorder.poll(13.0)
    assert [job.name for job in sink.jobs] == ["first", "second"]


def test_policy_changes_apply_to_new_calls() -> None:
    sink = ListSink()
    recorder = CaptureRecorder(ALL, sink, linger=0)
    recorder.start(A_CALL_ID, 0.0)
    recorder.policy = CapturePolicy()
    assert recorder.start("new", 0.0) is False
    recorder.end(A_CALL_ID, "kept", 1.0)
    assert [job.name for job in sink.jobs] == ["kept"]


@pytest.mark.parametrize(
    ("head", "call_id"),
    [
        (b"INVITE sip:a SIP/2.0\r\nVia: x\r\nCall-ID: abc@h\r\nCSeq: 1 INVITE\r\n\r\n", b"abc@h"),
        (b"BYE sip:a SIP/2.0\r\ncall-id:   abc \r\n\r\n", b"abc"),
        (b"SIP/2.0 200 OK\r\nCALL-ID:\tabc\r\n\r\n", b"abc"),
        (b"SIP/2.0 200 OK\r\ni: compact\r\n\r\n", b"compact"),
        (b"SIP/2.0 200 OK\r\nI : compact\r\n\r\n", b"compact"),
        (b"SIP/2.0 200 OK\nVia: x\nCall-ID: lf-only\n\n", b"lf-only"),
        (b"SIP/2.0 200 OK\r\nCall-ID: unterminated", b"unterminated"),
        (b"SIP/2.0 200 OK\r\nVia: x\r\n\r\nCall-ID: in-the-body\r\n", None),
        (b"SIP/2.0 200 OK\r\ni: head\r\n\r\nx\r\nCall-ID: body\r\n", b"head"),
        (b"SIP/2.0 200 OK\r\nVia: i: not-a-header\r\n\r\n", None),
        (b"SIP/2.0 200 OK\r\nCall-ID: \r\n\r\n", None),
        (b"", None),
    ],
)
def test_call_id_of(head: bytes, call_id: bytes | None) -> None:
    assert call_id_of(head) == call_id
