"""The SIP application's dispatch: what goes to the B2BUA, the registrar, a transaction's
owner, and what it answers itself."""

from __future__ import annotations

from smartswitch.sip.message import Request, Response, make_response
from smartswitch.sip.transaction import Address, ClientTransaction

from .harness import ALICE, BOB, CAROL, SWITCH, Calls, Phone, Switch, connect, new_request


class Registrar:
    """A Registrations port that answers every REGISTER with 200, noting when and whence."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Address, float]] = []

    def register(self, request: Request, source: Address, now: float) -> Response:
        self.seen.append((request.call_id, source, now))
        return make_response(request, 200, None, "reg")


class Owner:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, float]] = []

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        self.events.append(("response", response.status, now))

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        self.events.append(("timeout", 0, now))


def _outside_a_dialog(phone: Phone, method: str) -> Request:
    return phone.send(
        new_request(
            method,
            f"sip:{SWITCH.host}",
            f"<sip:{phone.user}@{phone.address.host}>;tag=t",
            f"<sip:{phone.user}@{SWITCH.host}>",
            f"{method.lower()}@{phone.address.host}",
            ("Contact", phone.contact),
        )
    )


def test_register_goes_to_the_registrar_once_one_is_attached() -> None:
    switch = Switch(Calls((BOB,)))
    alice = Phone(switch, ALICE, "alice")
    _outside_a_dialog(alice, "REGISTER")
    (refused,) = switch.take(ALICE)
    assert isinstance(refused, Response) and refused.status == 405  # no registrar: lab mode
    assert "INVITE" in (refused.headers.get("allow") or "")

    registrar = Registrar()
    switch.sip.registrations = registrar
    switch.now = 7.0
    _outside_a_dialog(alice, "REGISTER")
    assert switch.responses(ALICE) == [200]
    assert registrar.seen == [("register@192.0.2.10", ALICE, 7.0)]


def test_requests_the_application_answers_itself() -> None:
    switch = Switch(Calls((BOB,)))
    alice = Phone(switch, ALICE, "alice")
    _outside_a_dialog(alice, "OPTIONS")
    (ok,) = switch.take(ALICE)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get("accept") == "application/sdp"
    _outside_a_dialog(alice, "BYE")  # a dialog-only method, outside any dialog
    _outside_a_dialog(alice, "MESSAGE")
    assert switch.responses(ALICE) == [481, 405]
    assert switch.take(BOB) == [] and not switch.b2bua.calls


def _probe(n: int) -> Request:
    return new_request(
        "OPTIONS",
        f"sip:bob@{BOB.host}",
        f"<sip:switch@{SWITCH.host}>;tag=s{n}",
        f"<sip:bob@{BOB.host}>",
        f"probe{n}@{SWITCH.host}",
    )


def test_answers_and_timeouts_go_to_the_transactions_owner() -> None:
    switch = Switch(Calls((BOB,)))
    answered, lost = Owner(), Owner()
    switch.run(lambda now: switch.layer.send_request(_probe(1), BOB, now, answered))
    probe = switch.request(BOB, "OPTIONS")
    switch.now = 0.2
    switch.receive(make_response(probe, 200, None, "b").to_bytes(), BOB)
    assert answered.events == [("response", 200, 0.2)]

    switch.now = 1.0
    switch.run(lambda now: switch.layer.send_request(_probe(2), BOB, now, lost))
    switch.advance(1.0 + 32.0)
    assert lost.events == [("timeout", 0, 33.0)]  # Timer F, 64*T1 after it was sent


def test_a_draining_node_refuses_new_calls_with_retry_after_and_keeps_its_calls() -> None:
    switch = Switch(Calls((BOB,)))
    alice = Phone(switch, ALICE, "alice")
    bob = Phone(switch, BOB, "bob")
    connect(switch, alice, bob)
    switch.sip.refuse_new_calls(30)

    carol = Phone(switch, CAROL, "carol")
    carol.call()
    refused = switch.final(carol.address)
    assert refused.status == 503
    assert refused.headers.get("retry-after") == "30"
    assert switch.take(BOB) == []  # no new B leg

    # The call in progress goes on: its BYE reaches the other side and is answered.
    alice.request("BYE")
    bye = switch.request(BOB, "BYE")
    bob.answer(bye, 200)
    assert switch.responses(ALICE) == [200]
    assert not switch.b2bua.calls
