"""Relayed media in the B2BUA, on the test's clock: the order of offers, answers and deletes,
and the races a network relay brings (a CANCEL while the offer is out, a 2xx retransmitted
while the answer is out).

The relay here is the port's other side held by the test: it writes down each request and
answers when the test says, with an SDP of its own (:data:`RELAYED`), as rtpengine would after
its round trip. What rtpengine itself does with these requests is tested against the real
daemon in tests/e2e/test_media.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smartswitch.b2bua.ports import Destination, MediaReply, Rejection
from smartswitch.model.media import (
    CallRef,
    MediaFailure,
    MediaMode,
    MediaOptions,
    MediaSettings,
    MediaUnavailable,
)
from smartswitch.sip.message import Request, Response
from smartswitch.sip.transaction import Address

from .harness import ALICE, BOB, CAROL, SDP, Phone, Switch

RELAYED = b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
RELAY = MediaSettings(mode=MediaMode.RELAY, codecs=("PCMA",), record=True)


@dataclass
class Relay:
    up: bool = True
    requests: list[tuple[str, CallRef, bytes, MediaOptions, MediaReply]] = field(
        default_factory=list
    )
    deleted: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.up

    def offer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        self.requests.append(("offer", call, sdp, options, reply))

    def answer(self, call: CallRef, sdp: bytes, options: MediaOptions, reply: MediaReply) -> None:
        self.requests.append(("answer", call, sdp, options, reply))

    def delete(self, call_id: str, record_as: str | None = None) -> None:
        self.deleted.append((call_id, record_as))

    def instance_of(self, call_id: str) -> str | None:
        return "r1"

    def reply(self, result: bytes | MediaFailure = RELAYED) -> tuple[str, CallRef]:
        """Answer the oldest request still out."""
        command, call, _sdp, _options, reply = self.requests.pop(0)
        reply(result)
        return command, call


@dataclass
class RelayedCalls:
    destinations: tuple[Address, ...]
    media: MediaSettings = RELAY

    def route(self, request: Request, source: Address, now: float) -> Rejection | object:
        from .harness import Session

        callee = request.sip_uri.user or ""
        return Session(
            tuple(
                Destination(
                    f"sip:{callee}@{a.host}:{a.port}", a, callee, "alice", f"p{n}", media=self.media
                )
                for n, a in enumerate(self.destinations)
            )
        )


def _setup(
    *destinations: Address, media: MediaSettings = RELAY
) -> tuple[Switch, Relay, Phone, Phone, Phone]:
    switch = Switch(RelayedCalls(destinations or (BOB,), media))  # type: ignore[arg-type]
    relay = Relay()
    switch.b2bua.media = relay
    return (
        switch,
        relay,
        Phone(switch, ALICE, "alice"),
        Phone(switch, BOB, "bob"),
        Phone(switch, CAROL, "carol"),
    )


def test_offer_before_the_invite_answer_before_the_200_delete_at_the_bye() -> None:
    switch, relay, alice, bob, _ = _setup()
    alice.call()
    assert switch.take(BOB) == []  # the INVITE waits for the relay
    (_, offer, sdp, options, _) = relay.requests[0]
    assert sdp == SDP and offer.from_tag == alice.tag
    assert options.codec_strip == ("all",) and options.codec_except == ("PCMA",)
    assert options.record_call
    relay.reply()
    invite = switch.request(BOB, "INVITE")
    assert invite.body == RELAYED and offer.call_id == invite.call_id  # one session per B leg
    bob.answer(invite, 200, SDP)
    assert switch.responses(ALICE) == [100]  # the caller's 200 waits for the relay's answer
    (command, answer, sdp, _, _) = relay.requests[0]
    assert (command, answer.to_tag, sdp) == ("answer", bob.tag, SDP)
    bob.answer(invite, 200, SDP)  # B retransmits its 2xx meanwhile: absorbed
    relay.reply()
    ok = switch.final(ALICE)
    assert ok.status == 200 and ok.body == RELAYED
    alice.connected(ok)
    alice.request("BYE")
    assert relay.deleted == [(offer.call_id, alice.invite.call_id if alice.invite else None)]


def test_cancel_while_the_offer_is_out_leaves_nothing() -> None:
    switch, relay, alice, _, _ = _setup()
    alice.call()
    alice.cancel()
    assert 487 in switch.responses(ALICE)
    _, offer = relay.reply()  # the relay took the session after all: it is deleted now
    assert relay.deleted == [(offer.call_id, None)]
    assert switch.take(BOB) == []


def test_no_relay_is_503_with_a_reason_or_direct_where_allowed() -> None:
    switch, relay, alice, _, _ = _setup()
    relay.up = False
    alice.call()
    refusal = switch.final(ALICE)
    assert refusal.status == 503
    assert (refusal.headers.get("reason") or "").startswith("SIP;cause=503;text=")
    assert switch.take(BOB) == [] and relay.requests == []

    switch, relay, alice, _, _ = _setup(media=MediaSettings(MediaMode.RELAY, fallback=True))
    relay.up = False
    alice.call()
    assert switch.request(BOB, "INVITE").body == SDP  # untouched: direct media


def test_an_offer_that_times_out_is_503_or_direct_where_allowed() -> None:
    switch, relay, alice, _, _ = _setup()
    alice.call()
    relay.reply(MediaUnavailable("no answer", command="offer"))
    assert switch.final(ALICE).status == 503
    assert switch.take(BOB) == []  # never half set up


def test_route_advance_reoffers_for_the_new_leg_and_deletes_the_old() -> None:
    switch, relay, alice, bob, carol = _setup(BOB, CAROL)
    alice.call()
    _, first = relay.reply()
    bob.answer(switch.request(BOB, "INVITE"), 503)
    assert relay.deleted == [(first.call_id, None)]
    _, second = relay.reply()
    assert second.call_id != first.call_id
    invite = switch.request(CAROL, "INVITE")
    assert invite.body == RELAYED and invite.call_id == second.call_id
    carol.answer(invite, 486)
    assert switch.final(ALICE).status == 486
    assert [d for d, _ in relay.deleted] == [first.call_id, second.call_id]


def test_reinvite_from_the_callee_is_a_new_offer_from_its_side() -> None:
    switch, relay, alice, bob, _ = _setup()
    alice.call()
    relay.reply()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 200, SDP)
    relay.reply()
    alice.connected(switch.final(ALICE))
    switch.take_all()
    bob.request("INVITE", SDP)
    (command, offer, _, _, _) = relay.requests[0]
    assert (command, offer.from_tag, offer.to_tag) == ("offer", bob.tag, alice.tag)
    relay.reply()
    reinvite = switch.request(ALICE, "INVITE")
    assert reinvite.body == RELAYED
    alice.answer(reinvite, 200, SDP)
    (command, answer, _, _, _) = relay.requests[0]
    assert (command, answer.from_tag, answer.to_tag) == ("answer", bob.tag, alice.tag)
    relay.reply()
    ok = [m for m in switch.take(BOB) if isinstance(m, Response) and m.status == 200]
    assert ok and ok[0].body == RELAYED


def test_bad_sdp_is_488_with_a_reason_before_routing() -> None:
    switch, relay, alice, _, _ = _setup()
    alice.call(body=b"v=0\r\nc=IN IP4 999.1.1.1\r\n")
    refusal = switch.final(ALICE)
    assert refusal.status == 488 and "SDP" in (refusal.headers.get("reason") or "")
    assert relay.requests == [] and switch.b2bua.stats["calls"] == 0


def test_a_party_behind_nat_has_its_media_sent_where_its_sip_comes_from() -> None:
    switch, relay, alice, bob, _ = _setup()
    behind_nat = SDP.replace(b"IN IP4 192.0.2.10", b"IN IP4 192.168.1.23")
    alice.call(body=behind_nat)
    (_, _, sdp, options, _) = relay.requests[0]
    assert sdp == behind_nat
    # ALICE's SIP comes from 192.0.2.10 (the NAT's public side): media goes there.
    assert options.received_from == ALICE.host and options.sip_source_address
    relay.reply()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 200, SDP.replace(b"IN IP4 192.0.2.10", b"IN IP4 10.1.2.3"))
    (command, _, _, answer_options, _) = relay.requests[0]
    assert command == "answer"
    assert answer_options.received_from == BOB.host and answer_options.sip_source_address


def test_a_party_with_its_own_public_address_in_its_sdp_is_left_alone() -> None:
    switch, relay, alice, bob, _ = _setup()
    alice.call()  # its SDP names 192.0.2.10, where its SIP comes from
    (_, _, _, options, _) = relay.requests[0]
    assert options.received_from is None and not options.sip_source_address
    relay.reply()
    invite = switch.request(BOB, "INVITE")
    # Another public address than its SIP's (a media server of the supplier's): no NAT.
    bob.answer(invite, 200, SDP.replace(b"IN IP4 192.0.2.10", b"IN IP4 198.51.100.7"))
    (_, _, _, answer_options, _) = relay.requests[0]
    assert answer_options.received_from is None and not answer_options.sip_source_address


def test_a_reinvite_keeps_the_nat_help_of_both_parties() -> None:
    """A re-offer from the callee behind NAT, answered by the caller behind NAT: each side's
    media still goes to its SIP source, as on the first offer and answer."""
    switch, relay, alice, bob, _ = _setup()
    alice_nat = SDP.replace(b"IN IP4 192.0.2.10", b"IN IP4 192.168.1.23")
    bob_nat = SDP.replace(b"IN IP4 192.0.2.10", b"IN IP4 10.1.2.3")
    alice.call(body=alice_nat)
    relay.reply()
    invite = switch.request(BOB, "INVITE")
    bob.answer(invite, 200, bob_nat)
    relay.reply()
    alice.connected(switch.final(ALICE))
    switch.take_all()
    bob.request("INVITE", bob_nat)
    (command, _, _, options, _) = relay.requests[0]
    assert command == "offer"
    assert options.received_from == BOB.host and options.sip_source_address
    relay.reply()
    reinvite = switch.request(ALICE, "INVITE")
    alice.answer(reinvite, 200, alice_nat)
    (command, _, _, answer_options, _) = relay.requests[0]
    assert command == "answer"
    assert answer_options.received_from == ALICE.host and answer_options.sip_source_address
