"""Dialogs (RFC 3261 section 12): route sets, in-dialog requests, loose and strict routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartswitch.sip import transaction
from smartswitch.sip.dialog import Dialog, uri_address
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Headers, Request, Response, make_response, parse_message
from smartswitch.sip.transaction import (
    Address,
    ServerTransaction,
    TransactionLayer,
    shared_address,
)
from smartswitch.sip.uri import SipUri

VECTORS = Path(__file__).parent.parent / "vectors"


def vector(name: str) -> Request | Response:
    return parse_message((VECTORS / "good" / f"{name}.sip").read_bytes())


def invite_and_ok() -> tuple[Request, Response]:
    """An INVITE we sent and the 2xx it got: ``invite_sdp`` and ``response_200_sdp``."""
    invite, ok = vector("invite_sdp"), vector("response_200_sdp")
    assert isinstance(invite, Request) and isinstance(ok, Response)
    return invite, ok


def incoming_invite(
    *record_route: str, contact: str | None = "<sip:alice@192.0.2.1:5070>"
) -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKin1"),
            ("From", '"Alice \\"A\\"" <sip:alice@atlanta.example.com>;tag=caller'),
            ("To", "<sip:bob@biloxi.example.com>"),
            ("Call-ID", "dlg-1@192.0.2.1"),
            ("CSeq", "101 INVITE"),
            *(("Record-Route", rr) for rr in record_route),
            *([("Contact", contact)] if contact else []),
        ]
    )
    return Request("INVITE", "sip:bob@192.0.2.2", headers)


LOCAL_CONTACT = "<sip:switch@192.0.2.2:5060>"


# --- creating dialogs ----------------------------------------------------------------------


def test_as_uac_takes_the_route_set_from_record_route_reversed() -> None:
    invite, ok = invite_and_ok()
    dialog = Dialog.as_uac(invite, ok, LOCAL_CONTACT)
    assert dialog.call_id == "3848276298220188511@atlanta.example.com"
    assert (dialog.local_tag, dialog.remote_tag) == ("9fxced76sl", "8321234356")
    assert dialog.local_uri == '"Alice" <sip:alice@atlanta.example.com>'
    assert dialog.remote_uri == "<sip:+442071234567@gw.example.net;user=phone>"
    assert dialog.remote_target == "sip:bob@192.0.2.4;transport=udp"  # the 2xx's Contact
    # 12.1.2: the response's Record-Route, in reverse order.
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (dialog.local_seq, dialog.remote_seq) == (314159, None)
    assert dialog.local_contact == LOCAL_CONTACT
    assert dialog.flow is None


def test_as_uac_without_contact_or_record_route() -> None:
    invite, ok = invite_and_ok()
    ok.headers.remove("contact")
    ok.headers.remove("record-route")
    dialog = Dialog.as_uac(invite, ok, LOCAL_CONTACT)
    assert dialog.remote_target == invite.uri
    assert dialog.route_set == []


def test_as_uas_takes_the_route_set_in_order() -> None:
    request = incoming_invite(
        "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>", "<sip:p0.example.com;lr>"
    )
    dialog = Dialog.as_uas(request, "callee", LOCAL_CONTACT)
    assert (dialog.local_tag, dialog.remote_tag) == ("callee", "caller")
    assert dialog.call_id == "dlg-1@192.0.2.1"
    assert dialog.local_uri == "<sip:bob@biloxi.example.com>"
    # The display name keeps its escapes when written back.
    assert dialog.remote_uri == '"Alice \\"A\\"" <sip:alice@atlanta.example.com>'
    assert dialog.remote_target == "sip:alice@192.0.2.1:5070"
    assert dialog.route_set == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
        "<sip:p0.example.com;lr>",
    ]
    assert (dialog.local_seq, dialog.remote_seq) == (0, 101)


def test_as_uas_needs_a_contact() -> None:
    with pytest.raises(SipParseError) as info:
        Dialog.as_uas(incoming_invite(contact=None), "callee", LOCAL_CONTACT)
    assert info.value.status == 400
    assert "Contact" in info.value.reason


# --- requests within the dialog ------------------------------------------------------------


def test_in_dialog_request_with_loose_routing() -> None:
    invite, ok = invite_and_ok()
    dialog = Dialog.as_uac(invite, ok, LOCAL_CONTACT)
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE"
    assert bye.uri == "sip:bob@192.0.2.4;transport=udp"  # the remote target
    assert bye.from_.tag == "9fxced76sl" and bye.from_.display == "Alice"
    assert bye.to.tag == "8321234356"
    assert bye.call_id == dialog.call_id
    assert (bye.cseq.number, bye.cseq.method) == (314160, "BYE")
    assert dialog.local_seq == 314160
    assert bye.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.headers.get("max-forwards") == "70"
    assert "contact" not in bye.headers  # BYE is no target refresh
    assert "via" not in bye.headers  # the transaction layer adds it
    # The request is well formed once a Via is on it.
    bye.headers.add("Via", "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKbye", first=True)
    again = parse_message(bye.to_bytes())
    assert isinstance(again, Request) and again.cseq.number == 314160


def test_in_dialog_sequence_numbers() -> None:
    dialog = Dialog.as_uas(incoming_invite(), "callee", LOCAL_CONTACT)
    assert dialog.create_request("INFO").cseq.number == 1  # the UAS's own space starts here
    reinvite = dialog.create_request("INVITE")
    assert reinvite.cseq.number == 2
    # The ACK of a 2xx carries the INVITE's number and takes none of its own.
    ack = dialog.create_request("ACK", cseq=2)
    assert (ack.cseq.number, ack.cseq.method) == (2, "ACK")
    assert dialog.local_seq == 2
    assert dialog.create_request("BYE").cseq.number == 3


@pytest.mark.parametrize("method", ["INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"])
def test_target_refresh_requests_carry_our_contact(method: str) -> None:
    dialog = Dialog.as_uas(incoming_invite(), "callee", LOCAL_CONTACT)
    assert dialog.create_request(method).headers.get("contact") == LOCAL_CONTACT


def test_strict_routing_puts_the_first_route_in_the_request_uri() -> None:
    """RFC 2543 proxies (no ;lr): the first route is the Request-URI, the remote target the
    last Route (12.2.1.1)."""
    request = incoming_invite("<sip:strict.example.com;transport=tcp>, <sip:loose.example.com;lr>")
    dialog = Dialog.as_uas(request, "callee", LOCAL_CONTACT)
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:strict.example.com;transport=tcp"
    assert bye.headers.get_all("route") == [
        "<sip:loose.example.com;lr>",
        "<sip:alice@192.0.2.1:5070>",
    ]
    assert dialog.next_hop() == Address("tcp", "strict.example.com", 5060)


# --- where in-dialog requests go -----------------------------------------------------------


def test_next_hop_is_the_first_route() -> None:
    request = incoming_invite("<sip:192.0.2.77:5070;lr;transport=tcp>, <sip:p1.example.com;lr>")
    dialog = Dialog.as_uas(request, "callee", LOCAL_CONTACT)
    assert dialog.next_hop() == Address("tcp", "192.0.2.77", 5070)


def test_next_hop_is_the_remote_target_without_routes() -> None:
    dialog = Dialog.as_uas(incoming_invite(), "callee", LOCAL_CONTACT)
    assert dialog.next_hop() == Address("udp", "192.0.2.1", 5070)


def test_next_hop_is_the_pinned_flow() -> None:
    dialog = Dialog.as_uas(incoming_invite("<sip:p1.example.com;lr>"), "callee", LOCAL_CONTACT)
    dialog.flow = Address("tcp", "198.51.100.4", 41000)
    assert dialog.next_hop() == Address("tcp", "198.51.100.4", 41000)


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("sip:192.0.2.1", Address("udp", "192.0.2.1", 5060)),
        ("sip:u@192.0.2.1:5080", Address("udp", "192.0.2.1", 5080)),
        ("sip:u@192.0.2.1;transport=TCP", Address("tcp", "192.0.2.1", 5060)),
        ("sip:u@192.0.2.1;transport=tls", Address("tls", "192.0.2.1", 5061)),
        ("sips:u@192.0.2.1", Address("tls", "192.0.2.1", 5061)),
        ("sips:u@192.0.2.1:6000;transport=tcp", Address("tcp", "192.0.2.1", 6000)),
        ("sip:[2001:db8::1]:5070", Address("udp", "2001:db8::1", 5070)),
    ],
)
def test_uri_address(uri: str, address: Address) -> None:
    assert uri_address(SipUri.parse(uri)) == address


def test_every_call_to_one_peer_shares_its_next_hop() -> None:
    """An Address is never untracked by the garbage collector (a tuple subclass): each call's
    transactions, lingering 32 s, would keep one of their own; they share one per peer."""
    hops = [Dialog.as_uas(incoming_invite(), "callee", LOCAL_CONTACT).next_hop() for _ in "ab"]
    assert hops[0] is hops[1]
    assert uri_address(SipUri.parse("sip:bob@192.0.2.1:5070")) is hops[0]


def test_shared_addresses_stay_bounded_under_many_peers() -> None:
    for n in range(transaction.SHARED_ADDRESSES + 10):
        shared_address("udp", f"10.0.{n // 256}.{n % 256}", 5060)
    assert 0 < len(transaction._shared) <= transaction.SHARED_ADDRESSES
    assert shared_address("udp", "10.0.0.1", 5060) == Address("udp", "10.0.0.1", 5060)


def test_next_hop_of_a_non_sip_target_is_a_416() -> None:
    dialog = Dialog.as_uas(incoming_invite(contact="<tel:+15551234567>"), "callee", LOCAL_CONTACT)
    with pytest.raises(SipParseError) as info:
        dialog.next_hop()
    assert info.value.status == 416


# --- a dialog between two transaction layers -----------------------------------------------


def test_dialog_between_two_layers() -> None:
    """INVITE, 200, ACK and BYE each way, the in-dialog requests built by the two dialogs."""
    caller = Address("udp", "192.0.2.1", 5070)
    callee = Address("udp", "192.0.2.2", 5060)

    class User:
        def __init__(self) -> None:
            self.requests: list[tuple[ServerTransaction, Request]] = []
            self.responses: list[Response] = []
            self.acks: list[Request] = []

        def on_request(self, tx: ServerTransaction, request: Request, now: float) -> None:
            self.requests.append((tx, request))

        def on_ack(self, request: Request, source: Address, now: float) -> None:
            self.acks.append(request)

        def on_cancel(self, invite_tx: ServerTransaction, now: float) -> None:
            raise AssertionError("no CANCEL here")

        def on_response(self, tx: object, response: Response, now: float) -> None:
            self.responses.append(response)

        def on_timeout(self, tx: object, now: float) -> None:
            raise AssertionError("no timeout here")

        def on_ack_timeout(self, tx: object, now: float) -> None:
            raise AssertionError("no ACK timeout here")

    a_user, b_user = User(), User()
    a = TransactionLayer(a_user, {"udp": (caller.host, caller.port)})
    b = TransactionLayer(b_user, {"udp": (callee.host, callee.port)})

    def deliver() -> None:
        while a.outgoing or b.outgoing:
            for data, dest in a.drain():
                assert dest == callee
                b.receive(data, caller, 0.0)
            for data, dest in b.drain():
                assert dest == caller
                a.receive(data, callee, 0.0)

    headers = Headers(
        [
            ("From", "<sip:alice@example.com>;tag=a1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "dlg-pair@192.0.2.1"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            ("Contact", "<sip:alice@192.0.2.1:5070>"),
        ]
    )
    invite_tx = a.send_request(Request("INVITE", "sip:bob@192.0.2.2", headers), callee, 0.0)
    deliver()
    ((server_tx, invite),) = b_user.requests
    b_dialog = Dialog.as_uas(invite, "b1", "<sip:bob@192.0.2.2>")
    ok = make_response(invite, 200, to_tag="b1")
    ok.headers.add("Contact", b_dialog.local_contact)
    b.respond(server_tx, ok, 0.0)
    deliver()
    answer = a_user.responses[-1]
    assert answer.status == 200
    a_dialog = Dialog.as_uac(invite_tx.request, answer, "<sip:alice@192.0.2.1:5070>")
    assert (a_dialog.local_tag, a_dialog.remote_tag) == (b_dialog.remote_tag, b_dialog.local_tag)
    assert a_dialog.call_id == b_dialog.call_id

    a.send_stateless(a_dialog.create_request("ACK", cseq=1), a_dialog.next_hop())
    deliver()
    (ack,) = b_user.acks
    assert (ack.to.tag, ack.from_.tag, ack.cseq.number) == ("b1", "a1", 1)
    b.ack_received(server_tx, 0.0)

    # BYE from the caller: the callee finds its dialog by Call-ID and tags.
    a.send_request(a_dialog.create_request("BYE"), a_dialog.next_hop(), 0.0)
    deliver()
    bye_tx, bye = b_user.requests[-1]
    assert (bye.call_id, bye.to.tag, bye.from_.tag) == (
        b_dialog.call_id,
        b_dialog.local_tag,
        b_dialog.remote_tag,
    )
    assert b_dialog.remote_seq is not None and bye.cseq.number > b_dialog.remote_seq
    b.respond(bye_tx, make_response(bye, 200), 0.0)
    deliver()
    assert [r.status for r in a_user.responses][-1] == 200

    # And the other way: the callee's requests go to the caller's Contact.
    b.send_request(b_dialog.create_request("INFO"), b_dialog.next_hop(), 0.0)
    deliver()
    _, info = a_user.requests[-1]
    assert info.method == "INFO"
    assert info.uri == "sip:alice@192.0.2.1:5070"
    assert (info.from_.tag, info.to.tag, info.cseq.number) == ("b1", "a1", 1)
