"""Parsing and serialising SIP messages: wire vectors (ours and RFC 4475), round trips, fuzzing.

The vectors are files in ``tests/vectors/good`` and ``tests/vectors/bad`` (made by
``tests/vectors/generate.py``). Every file has an expectation here, and every expectation a
file: ``test_every_vector_has_an_expectation`` keeps the two in step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import (
    Headers,
    PartialMessage,
    Request,
    Response,
    make_response,
    parse_message,
    response_from_partial,
)
from smartswitch.sip.uri import CSeq

VECTORS = Path(__file__).parent.parent / "vectors"


def load(kind: str, name: str) -> bytes:
    return (VECTORS / kind / f"{name}.sip").read_bytes()


def good(name: str) -> Request | Response:
    return parse_message(load("good", name))


def request(name: str, kind: str = "good") -> Request:
    message = parse_message(load(kind, name))
    assert isinstance(message, Request)
    return message


def response(name: str, kind: str = "good") -> Response:
    message = parse_message(load(kind, name))
    assert isinstance(message, Response)
    return message


def rejected(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


def declared_body(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


# --------------------------------------------------------------------------------------------
# Good vectors: each parses, with these values.


def test_invite_with_sdp() -> None:
    data = load("good", "invite_sdp")
    msg = request("invite_sdp")
    assert msg.method == "INVITE"
    assert msg.uri == "sip:+442071234567@gw.example.net:5060;user=phone"
    uri = msg.sip_uri
    assert (uri.scheme, uri.user, uri.host, uri.port) == (
        "sip",
        "+442071234567",
        "gw.example.net",
        5060,
    )
    assert uri.params == {"user": "phone"}
    via = msg.top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "192.0.2.10",
        5060,
        "z9hG4bK74bf9",
    )
    assert "rport" in via.params and via.params["rport"] is None
    assert msg.from_.display == "Alice"
    assert msg.from_.tag == "9fxced76sl"
    assert msg.to.tag is None
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.headers.get_all("allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE"]
    assert msg.headers.get_all("Supported") == ["timer", "100rel"]
    assert msg.headers.get("user-agent") == "ExamplePhone/1.0"
    assert [c.uri for c in msg.contacts()] == ["sip:alice@192.0.2.10:5060;transport=udp"]
    assert msg.body == declared_body(data)
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=sendrecv\r\n")


def test_compact_header_forms() -> None:
    msg = request("compact_forms")
    assert msg.top_via.transport == "TCP"
    assert msg.top_via.branch == "z9hG4bKcompact1"
    assert (msg.from_.display, msg.from_.tag) == ("Alice", "1928301774")
    assert msg.to.display == "Bob"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert [c.uri for c in msg.contacts()] == ["sip:alice@192.0.2.20;transport=tcp"]
    assert msg.headers.get("supported") == "timer"  # k:
    assert msg.headers.get("subject") == "compact header names"  # s:
    assert msg.headers.get("content-type") == "application/sdp"  # c:
    assert msg.headers.get("content-length") == str(len(msg.body))  # l:
    # Every spelling finds the same header.
    for name in ("v", "V", "via", "VIA"):
        assert msg.headers.get(name) == msg.headers.get("Via")
    assert "i" in msg.headers and "Call-ID" in msg.headers


def test_line_folding_and_case_insensitive_names() -> None:
    msg = request("folding_and_case")
    via = msg.top_via
    assert (via.host, via.port, via.branch) == ("pc33.atlanta.example.com", 5060, "z9hG4bKfold1")
    assert msg.from_.tag == "1928301774"
    assert msg.to.uri == "sip:carol@chicago.example.com"
    assert msg.call_id == "fold.a84b4c76e66710"
    assert msg.cseq == CSeq(63104, "OPTIONS")
    assert msg.headers.get("max-forwards") == "70"
    # RFC 3261 7.3.1: a folded line is one value, its line breaks equivalent to one SP.
    assert msg.headers.get("subject") == "a subject continued on a second line and a third"


def test_comma_combined_list_headers() -> None:
    msg = request("comma_combined")
    assert [(v.host, v.port, v.branch) for v in msg.vias] == [
        ("p1.example.com", None, "z9hG4bKp1a"),
        ("p2.example.com", 5070, "z9hG4bKp2b"),
        ("192.0.2.1", 5060, "z9hG4bKua1"),
    ]
    assert msg.vias[1].params["received"] == "192.0.2.2"
    assert msg.headers.get_all("route") == [
        "<sip:p3.example.com;lr>",
        "<sip:p4.example.com;lr>",
        "<sip:p5.example.com;lr>",
    ]
    assert msg.headers.get_all("record-route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    first, second = msg.contacts()
    assert (first.uri, first.params) == ("sip:alice@192.0.2.1", {"q": "0.7", "expires": "3600"})
    # The comma inside the quoted display name does not split the value.
    assert (second.display, second.uri, second.params) == (
        "Alice, mobile",
        "sip:alice@192.0.2.9",
        {"q": "0.1"},
    )
    assert msg.headers.get_all("supported") == ["timer", "100rel", "replaces"]
    # get_lines keeps the header lines as they were.
    assert len(msg.headers.get_lines("via")) == 2


def test_quoted_display_names_with_escapes_and_commas() -> None:
    msg = request("display_names")
    assert msg.from_.display == 'Doe, John "JD" \\ <boss>'
    assert msg.from_.uri == "sip:jd@example.com"
    assert msg.from_.tag == "abc"
    assert msg.to.display == "Bob; the builder"
    assert msg.to.uri == "sip:bob@biloxi.example.com;transport=udp"
    # A quoted header parameter keeps its quotes, so it is written back unchanged.
    assert msg.to.params == {"x-param": '"a, b; c"'}
    assert [(c.display, c.uri, c.params) for c in msg.contacts()] == [
        ("A, B", "sip:a@192.0.2.1", {}),
        ("<not a uri>", "sip:b@192.0.2.1", {"q": "0.5"}),
        ("plain token", "sip:c@192.0.2.1", {}),
    ]
    assert msg.body.decode() == "Hello, \u00e9t\u00e9 \u2603\r\n"


def test_ipv6_references() -> None:
    msg = request("ipv6")
    uri = msg.sip_uri
    assert (uri.host, uri.port, uri.transport) == ("2001:db8::10", 5070, "udp")
    assert str(uri) == "sip:user@[2001:db8::10]:5070;transport=udp"
    top, second = msg.vias
    assert (top.host, top.port, top.branch) == ("2001:db8::9:1", 5070, "z9hG4bKas3-111")
    assert str(top) == "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111;rport"
    assert (second.host, second.port) == ("2001:db8::9:255", None)
    assert second.params["received"] == "2001:db8::9:255"
    assert msg.headers.get_all("route") == ["<sip:[2001:db8::20];lr>"]
    assert [(c.sip_uri().host, c.sip_uri().port) for c in msg.contacts()] == [
        ("2001:db8::9:1", 5070),
        ("::1", None),
    ]
    assert msg.from_.sip_uri().host == "2001:db8::9:1"


def test_unknown_uri_schemes_in_to_from_contact_are_kept_opaque() -> None:
    msg = request("opaque_schemes")
    assert msg.from_.uri == "tel:+15557654321;phone-context=+1"
    assert (msg.from_.display, msg.from_.tag) == ("Caller", "ff01")
    assert msg.to.uri == "tel:+15551234567"
    assert [c.uri for c in msg.contacts()] == [
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "sip:c@192.0.2.30",
    ]
    assert msg.headers.get("p-asserted-identity") == "<tel:+15557654321>"
    # Only asking for a SIP URI of them fails, and with 416 (RFC 3261 8.2.2.1).
    with pytest.raises(SipParseError) as info:
        msg.to.sip_uri()
    assert info.value.status == 416


def test_provisional_response() -> None:
    msg = response("response_180")
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.to.tag == "8321234356"
    assert msg.top_via.params == {
        "branch": "z9hG4bK74bf9",
        "rport": "5060",
        "received": "192.0.2.10",
    }
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.body == b""


def test_final_response_with_sdp() -> None:
    data = load("good", "response_200_sdp")
    msg = response("response_200_sdp")
    assert (msg.status, msg.reason) == (200, "OK")
    assert msg.headers.get_all("record-route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    assert msg.contacts()[0].sip_uri().transport == "udp"
    assert msg.body == declared_body(data)


def test_bare_lf_line_ends_are_accepted() -> None:
    """Lenient by design: RFC 3261 wants CRLF, but test tools and some stacks send LF."""
    msg = request("lf_line_ends")
    assert msg.call_id == "lf.1@192.0.2.1"
    assert msg.cseq == CSeq(1, "OPTIONS")
    assert msg.to_bytes().count(b"\r\n") == 9  # written back with CRLF


# --- RFC 4475 3.1.1: valid messages -----------------------------------------------------------


def test_rfc4475_wsinv_short_tortuous_invite() -> None:
    msg = request("rfc4475_wsinv")
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.sip_uri.params == {"unknownparam": None}
    assert msg.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert (msg.from_.uri, msg.from_.tag) == ("sip:jdrosen@example.com", "98asjd8")
    assert msg.headers.get("max-forwards") == "0068"
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.cseq == CSeq(9, "INVITE")
    # LWS around the "/" of sent-protocol, folded across lines; three Vias in two headers.
    assert [(v.transport, v.host, v.port, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", None, "390skdjuw"),
        ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", None, "z9hG4bK30239"),
    ]
    assert msg.headers.get("subject") == ""  # "s :", empty
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get_all("route") == [
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    ]
    (contact,) = msg.contacts()
    assert contact.display == 'Quoted string ""'
    assert contact.uri == "sip:jdrosen@example.com"
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.headers.get("content-type") == "application/sdp"
    assert len(msg.body) == 150


def test_rfc4475_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("rfc4475_intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method
    uri = msg.sip_uri
    # "?" and ";" are legal in a user part: the first "@" ends the userinfo.
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.port, uri.params, uri.headers) == ("example.com", None, {}, "")
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    # quoted-pairs, including an escaped NUL, resolved in the display name.
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.to.sip_uri().user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == (
        '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    )
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.cseq == CSeq(139122385, method)
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    assert msg.headers.get("max-forwards") == "255"


def test_rfc4475_esc01_escapes_are_kept_as_sent() -> None:
    """A parser must accept it; comparing %-escaped URIs is the application's business."""
    msg = request("rfc4475_esc01")
    assert msg.sip_uri.user == "sips%3Auser%40example.com"
    assert msg.sip_uri.host == "example.net"
    assert msg.to.sip_uri().user == "%75se%72"
    assert msg.from_.sip_uri().user == "I%20have%20spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # i:
    assert msg.headers.get("content-type") == "application/sdp"  # C:
    (contact,) = msg.contacts()
    assert contact.sip_uri().params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert len(msg.body) == 150


def test_rfc4475_escnull_nulls_in_user_parts() -> None:
    msg = request("rfc4475_escnull")
    assert msg.to.sip_uri().user == "null-%00-null"
    assert [c.sip_uri().user for c in msg.contacts()] == ["%00", "%00%00"]
    assert msg.headers.get("content-length") == "0"  # "L:0"


def test_rfc4475_esc02_percent_is_no_escape_in_method_or_header_name() -> None:
    msg = request("rfc4475_esc02")
    assert msg.method == "RE%47IST%45R"  # an unknown method, not REGISTER
    assert msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display == "%Z%45"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    # Two Contacts, not three: C%6Fntact is an extension header.
    assert [c.uri for c in msg.contacts()] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_rfc4475_lwsdisp_no_space_before_angle_bracket() -> None:
    msg = request("rfc4475_lwsdisp")
    assert (msg.from_.display, msg.from_.uri, msg.from_.tag) == (
        "caller",
        "sip:caller@example.com",
        "323",
    )


def test_rfc4475_longreq_long_values_and_many_vias() -> None:
    msg = request("rfc4475_longreq")
    assert msg.to.display == "I have a user name of " + "extreme" * 10 + " proportion"
    to_uri = msg.to.sip_uri()
    assert to_uri.port == 6000
    assert len(to_uri.params) == 3
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert len(msg.from_.params) == 3
    assert len(msg.vias) == 34
    assert [v.host for v in msg.vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    last = msg.vias[-1]
    assert last.params["received"] == "192.0.2.5"
    assert last.branch == "very" + "long" * 50 + "branchvalue"
    assert msg.headers.get("Unknown-" + "Long" * 20 + "-Name") is not None
    assert len(msg.body) == 150


def test_rfc4475_dblreq_extra_octets_after_the_body_are_ignored() -> None:
    """RFC 3261 18.3: on UDP, octets past Content-Length are noise (here: an INVITE)."""
    msg = request("rfc4475_dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert b"INVITE" not in msg.to_bytes()


def test_rfc4475_semiuri_semicolon_in_user_part() -> None:
    msg = request("rfc4475_semiuri")
    assert msg.sip_uri.user == "user;par=u%40example.net"
    assert (msg.sip_uri.host, msg.sip_uri.params) == ("example.com", {})
    assert msg.headers.get_all("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_rfc4475_transports_unknown_transports_in_via() -> None:
    msg = request("rfc4475_transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_rfc4475_mpart01_binary_multipart_body_kept_exactly() -> None:
    data = load("good", "rfc4475_mpart01")
    msg = request("rfc4475_mpart01")
    assert msg.body == declared_body(data)
    assert b"\x00" in msg.body and b"\xff" in msg.body
    assert msg.headers.get("content-type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert (msg.top_via.port, msg.top_via.params["rport"]) == (5070, None)
    assert parse_message(msg.to_bytes()).body == msg.body


def test_rfc4475_unreason_utf8_reason_phrase() -> None:
    msg = response("rfc4475_unreason")
    assert msg.status == 200
    assert msg.reason == (
        "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e"
        "\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441"
        "\u0442\u043e\u0435"
    )
    assert len(msg.body) == 154


def test_rfc4475_noreason_empty_reason_phrase() -> None:
    msg = response("rfc4475_noreason")
    assert (msg.status, msg.reason) == (100, "")
    assert msg.to.tag == "902jndnke3"


# --------------------------------------------------------------------------------------------
# Bad vectors: the outcome of each. Either parse_message refuses it with this status and a
# reason naming the fault, or (where RFC 4475 leaves a choice, or the fault is one for the
# application, not the parser) it parses, and ``check`` proves what the application gets.


@dataclass(frozen=True)
class Reject:
    status: int
    reason: str  # a regex the reason must match
    why: str = ""


@dataclass(frozen=True)
class Accept:
    why: str
    check: Callable[[Request | Response], None]


def _raises(status: int, pattern: str, call: Callable[[], object]) -> None:
    with pytest.raises(SipParseError) as info:
        call()
    assert info.value.status == status
    assert re.search(pattern, info.value.reason), info.value.reason


def _req(check: Callable[[Request], None]) -> Callable[[Request | Response], None]:
    def run(message: Request | Response) -> None:
        assert isinstance(message, Request)
        check(message)

    return run


def _resp(check: Callable[[Response], None]) -> Callable[[Request | Response], None]:
    def run(message: Request | Response) -> None:
        assert isinstance(message, Response)
        check(message)

    return run


def _date_is_kept(m: Request) -> None:
    assert m.headers.get("date") == "Fri, 01 Jan 2010 16:00:00 EST"


def _contact_refused_when_read(m: Request) -> None:
    _raises(400, r"URI with headers outside <>", m.contacts)


def _spaces_in_addr_spec_ignored(m: Request) -> None:
    assert (m.to.display, m.to.uri) == ("Watson, Thomas", "sip:t.watson@example.org")


def _unquoted_display_names(m: Request) -> None:
    assert (m.from_.display, m.from_.tag) == ("Bell, Alexander", "43")
    assert m.to.display == "Watson, Thomas"


def _bare_cookie_branch(m: Request) -> None:
    assert m.top_via.branch == "z9hG4bK"


def _ruri_416(m: Request) -> None:
    _raises(416, r"not a SIP URI", lambda: m.sip_uri)


def _opaque_schemes(m: Request) -> None:
    assert (m.to.uri, m.from_.uri) == ("isbn:2983792873", "http://www.example.com")
    assert [c.uri for c in m.contacts()] == ["name:John_Smith"]
    _raises(416, r"not a SIP URI", m.to.sip_uri)


def _unknown_require(m: Request) -> None:
    assert m.headers.get_all("require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("proxy-require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def _unknown_content_type(m: Request) -> None:
    assert m.headers.get("content-type") == "application/unknownformat"
    assert m.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def _unknown_auth_scheme(m: Request) -> None:
    assert m.headers.get("authorization") == "NoOneKnowsThisScheme opaque-data=here"


def _broadcast_via(m: Response) -> None:
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]


def _zero_max_forwards(m: Request) -> None:
    assert m.headers.get("max-forwards") == "0"


def _contact_header_param(m: Request) -> None:
    (contact,) = m.contacts()
    assert (contact.params, contact.sip_uri().params) == ({"unknownparam": None}, {})


def _contact_uri_param(m: Request) -> None:
    (contact,) = m.contacts()
    assert (contact.params, contact.sip_uri().params) == ({}, {"unknownparam": None})


def _unacceptable_accept(m: Request) -> None:
    assert m.headers.get_all("accept") == ["text/nobodyKnowsThis"]
    assert m.headers.get("content-type") == "application/sdp"


def _rfc2543_syntax(m: Request) -> None:
    assert m.top_via.branch is None  # RFC 2543: no magic cookie, no branch at all
    assert m.from_.tag is None
    assert m.headers.get("max-forwards") is None
    # No Content-Length on UDP: the body runs to the end of the datagram.
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n")
    # A bare addr-spec's ";user=phone" belongs to the header, not the URI (RFC 3261 20.10).
    assert (m.to.uri, m.to.params) == ("sip:+16505552222@ss1.example.net", {"user": "phone"})
    assert m.headers.get_all("record-route") == ["<sip:UserB@example.com;maddr=ss1.example.com>"]


BAD_EXPECTED: dict[str, Reject | Accept] = {
    # RFC 4475 3.1.2: invalid messages.
    "rfc4475_badinv01": Reject(400, r"\bVia\b", "3.1.2.1: empty Via parameters and values"),
    "rfc4475_clerr": Reject(400, r"Content-Length", "3.1.2.2: Content-Length past the datagram"),
    "rfc4475_ncl": Reject(400, r"Content-Length", "3.1.2.3: negative Content-Length"),
    "rfc4475_ncl_five": Reject(400, r"Content-Length", "3.1.2.3: non-numeric Content-Length"),
    "rfc4475_scalar02": Reject(
        400, r"CSeq", "3.1.2.4: CSeq > 2**32-1 (Max-Forwards 300 alone would be let pass)"
    ),
    "rfc4475_scalarlg": Reject(
        400, r"CSeq", "3.1.2.5: a response; the transaction layer drops it silently"
    ),
    "rfc4475_quotbal": Reject(400, r"\bTo\b", "3.1.2.6: unterminated quote in To"),
    "rfc4475_ltgtruri": Reject(400, r"Request-URI", "3.1.2.7: Request-URI enclosed in <>"),
    "rfc4475_lwsruri": Reject(400, r"request line", "3.1.2.8: LWS inside the Request-URI"),
    "rfc4475_lwsstart": Reject(400, r"request line", "3.1.2.9: several SP in the request line"),
    "rfc4475_trws": Reject(400, r"request line", "3.1.2.10: SP after SIP/2.0"),
    "rfc4475_escruri": Reject(400, r"Request-URI with headers", "3.1.2.11: R-URI headers"),
    "rfc4475_baddate": Accept(
        "3.1.2.12: a non-GMT Date; we never read Date, and RFC 4475 advises not to reject then",
        _req(_date_is_kept),
    ),
    "rfc4475_regbadct": Accept(
        "3.1.2.13: Contact is parsed when the application asks (lazily), and then it is a 400",
        _req(_contact_refused_when_read),
    ),
    "rfc4475_badaspec": Accept(
        "3.1.2.14: lenient by design (RFC 4475 allows it): spaces inside <> are ignored",
        _req(_spaces_in_addr_spec_ignored),
    ),
    "rfc4475_baddn": Accept(
        "3.1.2.15: lenient by design: an unquoted display name with a comma is unambiguous in "
        "From and To (single-valued); we write display names back quoted, never as received",
        _req(_unquoted_display_names),
    ),
    "rfc4475_badvers": Reject(505, r"version", "3.1.2.16: SIP/7.0"),
    "rfc4475_mismatch01": Reject(400, r"CSeq method", "3.1.2.17: OPTIONS with CSeq INVITE"),
    "rfc4475_mismatch02": Reject(
        400, r"CSeq method", "3.1.2.18: unknown method, CSeq mismatch (501 preferred, 400 allowed)"
    ),
    "rfc4475_bigcode": Reject(400, r"status code", "3.1.2.19: status 4294967301; dropped"),
    # RFC 4475 3.2: transaction layer.
    "rfc4475_badbranch": Accept(
        "3.2.1: branch is the bare magic cookie; valid syntax, and matched as that branch",
        _req(_bare_cookie_branch),
    ),
    # RFC 4475 3.3: application-layer semantics.
    "rfc4475_insuf": Reject(400, r"missing From", "3.3.1: no To, From, Call-ID, Max-Forwards"),
    "rfc4475_unkscm": Accept(
        "3.3.2: unknown Request-URI scheme; 416 when the application asks for a SIP URI",
        _req(_ruri_416),
    ),
    "rfc4475_novelsc": Accept(
        "3.3.3: soap.beep Request-URI; 416 when the application asks for a SIP URI",
        _req(_ruri_416),
    ),
    "rfc4475_unksm2": Accept(
        "3.3.4: unknown schemes in To, From, Contact are carried opaque (a registrar says 400)",
        _req(_opaque_schemes),
    ),
    "rfc4475_bext01": Accept(
        "3.3.5: unknown Require / Proxy-Require; the 420 is the UA's to send",
        _req(_unknown_require),
    ),
    "rfc4475_invut": Accept(
        "3.3.6: unknown Content-Type; the 415 is the UA's to send", _req(_unknown_content_type)
    ),
    "rfc4475_regaut01": Accept(
        "3.3.7: unknown Authorization scheme; the registrar challenges", _req(_unknown_auth_scheme)
    ),
    "rfc4475_multi01": Reject(400, r"more than one CSeq", "3.3.8: two CSeq, Call-ID, To, From"),
    "rfc4475_mcl01": Reject(400, r"more than one Content-Length", "3.3.9: two Content-Lengths"),
    "rfc4475_bcast": Accept(
        "3.3.10: a 200 with a broadcast second Via; the transaction layer drops it as stray",
        _resp(_broadcast_via),
    ),
    "rfc4475_zeromf": Accept(
        "3.3.11: Max-Forwards 0 is valid; the 483 is the element's to send",
        _req(_zero_max_forwards),
    ),
    "rfc4475_cparam01": Accept(
        "3.3.12: after a bare Contact URI, ';unknownparam' is a header parameter",
        _req(_contact_header_param),
    ),
    "rfc4475_cparam02": Accept(
        "3.3.13: inside <>, ';unknownparam' is a URI parameter", _req(_contact_uri_param)
    ),
    "rfc4475_sdp01": Accept(
        "3.3.15: Accept without application/sdp; the 406 is the UA's to send",
        _req(_unacceptable_accept),
    ),
    "rfc4475_inv2543": Accept("3.4.1: RFC 2543 syntax is accepted", _req(_rfc2543_syntax)),
    # Our own.
    "via_bad_port": Reject(400, r"\bVia\b.*port"),
    "via_no_sent_by": Reject(400, r"\bVia\b.*sent-by"),
    "via_missing": Reject(400, r"missing Via"),
    "from_missing": Reject(400, r"missing From"),
    "to_garbage": Reject(400, r"\bTo\b"),
    "call_id_missing": Reject(400, r"missing Call-ID"),
    "cseq_not_a_number": Reject(400, r"CSeq"),
    "cseq_superscript_digit": Reject(400, r"CSeq", "'²'.isdigit() is true, int('²') fails"),
    "max_forwards_word": Reject(400, r"Max-Forwards"),
    "content_length_superscript": Reject(400, r"Content-Length"),
    "content_length_huge": Reject(400, r"Content-Length", "5000 digits: int() refuses them"),
    "content_length_twice_equal": Reject(400, r"more than one Content-Length"),
    "header_without_colon": Reject(400, r"malformed header line"),
    "continuation_first": Reject(400, r"continuation line"),
    "request_line_two_parts": Reject(400, r"request line"),
    "request_uri_no_scheme": Reject(400, r"Request-URI"),
    "method_not_token": Reject(400, r"method"),
    "status_letters": Reject(400, r"status code"),
    "status_99": Reject(400, r"status code"),
    "status_superscript": Reject(400, r"status code"),
    "response_sip3": Reject(505, r"version"),
    "empty": Reject(400, r"empty message"),
    "only_crlf": Reject(400, r"empty message"),
    "binary_noise": Reject(400, r"header line"),
}

# Each good vector and the test above that checks its values.
GOOD_EXPECTED = {
    "invite_sdp": test_invite_with_sdp,
    "compact_forms": test_compact_header_forms,
    "folding_and_case": test_line_folding_and_case_insensitive_names,
    "comma_combined": test_comma_combined_list_headers,
    "display_names": test_quoted_display_names_with_escapes_and_commas,
    "ipv6": test_ipv6_references,
    "opaque_schemes": test_unknown_uri_schemes_in_to_from_contact_are_kept_opaque,
    "response_180": test_provisional_response,
    "response_200_sdp": test_final_response_with_sdp,
    "lf_line_ends": test_bare_lf_line_ends_are_accepted,
    "rfc4475_wsinv": test_rfc4475_wsinv_short_tortuous_invite,
    "rfc4475_intmeth": test_rfc4475_intmeth_wide_range_of_valid_characters,
    "rfc4475_esc01": test_rfc4475_esc01_escapes_are_kept_as_sent,
    "rfc4475_escnull": test_rfc4475_escnull_nulls_in_user_parts,
    "rfc4475_esc02": test_rfc4475_esc02_percent_is_no_escape_in_method_or_header_name,
    "rfc4475_lwsdisp": test_rfc4475_lwsdisp_no_space_before_angle_bracket,
    "rfc4475_longreq": test_rfc4475_longreq_long_values_and_many_vias,
    "rfc4475_dblreq": test_rfc4475_dblreq_extra_octets_after_the_body_are_ignored,
    "rfc4475_semiuri": test_rfc4475_semiuri_semicolon_in_user_part,
    "rfc4475_transports": test_rfc4475_transports_unknown_transports_in_via,
    "rfc4475_mpart01": test_rfc4475_mpart01_binary_multipart_body_kept_exactly,
    "rfc4475_unreason": test_rfc4475_unreason_utf8_reason_phrase,
    "rfc4475_noreason": test_rfc4475_noreason_empty_reason_phrase,
}

GOOD_VECTORS = sorted(p.stem for p in (VECTORS / "good").glob("*.sip"))
BAD_VECTORS = sorted(p.stem for p in (VECTORS / "bad").glob("*.sip"))


def test_every_vector_has_an_expectation() -> None:
    assert set(GOOD_VECTORS) == set(GOOD_EXPECTED)
    assert set(BAD_VECTORS) == set(BAD_EXPECTED)


@pytest.mark.parametrize("name", BAD_VECTORS)
def test_bad_vector(name: str) -> None:
    data = load("bad", name)
    expected = BAD_EXPECTED[name]
    if isinstance(expected, Reject):
        exc = rejected(data)
        assert exc.status == expected.status, exc.reason
        assert re.search(expected.reason, exc.reason), exc.reason
        assert "\r" not in exc.reason and "\n" not in exc.reason
    else:
        expected.check(parse_message(data))


def test_rejected_request_keeps_what_was_readable() -> None:
    """The partial message carries the headers read so far, to address the 400 (8.2.6)."""
    exc = rejected(load("bad", "rfc4475_mismatch01"))
    partial = exc.partial
    assert isinstance(partial, PartialMessage)
    assert partial.is_request
    assert partial.first_line == "OPTIONS sip:user@example.com SIP/2.0"
    assert partial.headers.get("call-id") == "mismatch01.dj0234sxdfl3"
    data = response_from_partial(partial, 400, "Bad Request (CSeq)", "t1")
    answer = parse_message(data)
    assert isinstance(answer, Response)
    assert (answer.status, answer.reason) == (400, "Bad Request (CSeq)")
    assert answer.call_id == "mismatch01.dj0234sxdfl3"
    assert answer.top_via.branch == "z9hG4bKkdjuw"
    assert answer.to.tag == "t1"
    assert answer.from_.tag == "34525"
    assert answer.cseq == CSeq(8, "INVITE")


def test_partial_of_a_response_is_marked_as_a_response() -> None:
    exc = rejected(load("bad", "rfc4475_bigcode"))
    assert isinstance(exc.partial, PartialMessage)
    assert not exc.partial.is_request


def test_response_from_partial_keeps_an_existing_to_tag() -> None:
    exc = rejected(load("bad", "rfc4475_lwsruri"))
    assert isinstance(exc.partial, PartialMessage)
    answer = parse_message(response_from_partial(exc.partial, 400, "Bad Request", "ignored"))
    assert answer.to.tag == "3xfe-9921883-z9f"


# --------------------------------------------------------------------------------------------
# Serialisation round trips.


def _values(message: Request | Response) -> tuple[object, ...]:
    first = (
        (message.method, message.uri)
        if isinstance(message, Request)
        else (message.status, message.reason)
    )
    headers = [(key, value) for key, _, value in message.headers.items() if key != "content-length"]
    return first, headers, message.body


@pytest.mark.parametrize("name", GOOD_VECTORS)
def test_round_trip(name: str) -> None:
    first = good(name)
    data = first.to_bytes()
    second = parse_message(data)
    assert _values(second) == _values(first)
    assert second.headers.get("content-length") == str(len(first.body))
    # And once written, writing again changes nothing.
    assert second.to_bytes() == data


def test_round_trip_recomputes_content_length() -> None:
    msg = request("invite_sdp")
    msg.body = b"v=0\r\n"
    data = msg.to_bytes()
    assert data.endswith(b"Content-Length: 5\r\n\r\nv=0\r\n")
    assert data.count(b"Content-Length") == 1
    assert parse_message(data).body == b"v=0\r\n"


def test_round_trip_adds_content_length_when_missing() -> None:
    msg = request("rfc4475_inv2543", kind="bad")
    assert "content-length" not in msg.headers
    again = parse_message(msg.to_bytes(), require_content_length=True)
    assert again.body == msg.body


def test_round_trip_keeps_unknown_headers_and_their_order() -> None:
    msg = request("rfc4475_wsinv")
    names = [name for key, name, _ in msg.headers.items() if key != "content-length"]
    again = parse_message(msg.to_bytes())
    # Content-Length is recomputed and written last; everything else keeps its order.
    assert [name for _, name, _ in again.headers.items()] == [*names, "Content-Length"]
    assert again.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"


def test_round_trip_of_a_built_message() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbuilt"),
            ("From", '"A \\"B\\"" <sip:a@example.com>;tag=1'),
            ("To", "<sip:b@example.com>"),
            ("Call-ID", "built@192.0.2.1"),
            ("CSeq", "1 MESSAGE"),
        ]
    )
    built = Request("MESSAGE", "sip:b@example.com", headers, b"\x00\xff binary \r\n\r\n")
    again = parse_message(built.to_bytes())
    assert isinstance(again, Request)
    assert again.body == b"\x00\xff binary \r\n\r\n"
    assert again.from_.display == 'A "B"'
    assert str(again.from_) == '"A \\"B\\"" <sip:a@example.com>;tag=1'


# --------------------------------------------------------------------------------------------
# Headers, make_response.


def test_headers_api() -> None:
    h = Headers([("Via", "a"), ("v", "b"), ("X-Custom", "1")])
    assert h.get("VIA") == "a"
    assert h.get_lines("via") == ["a", "b"]
    assert [name for _, name, _ in h.items()] == ["Via", "Via", "X-Custom"]  # compact expanded
    h.add("via", "top", first=True)
    assert h.get("v") == "top"
    h.set("Via", "only")
    assert h.get_lines("via") == ["only"]
    assert next(h.items()) == ("via", "Via", "only")  # kept at the first one's place
    h.remove_first("x-custom")
    assert "x-custom" not in h
    h.set("Call-Id", "c")  # a header not there yet is added
    assert h.get("call-id") == "c"
    copy = h.copy()
    copy.remove("via")
    assert "via" in h and "via" not in copy
    assert len(h) == 2
    assert [name for _, name, _ in Headers([("call-id", "x"), ("cseq", "1 A")]).items()] == [
        "Call-ID",
        "CSeq",
    ]


def test_make_response_copies_the_addressing_headers() -> None:
    req = request("comma_combined")
    resp = make_response(req, 180, to_tag="t9")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert [v.host for v in resp.vias] == [v.host for v in req.vias]
    assert resp.from_.tag == "a73kszlfl"
    assert resp.to.tag == "t9"
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    # Nothing else is copied.
    assert "route" not in resp.headers and "contact" not in resp.headers
    assert make_response(req, 100, to_tag="t9").to.tag is None  # 100 carries no tag
    assert make_response(req, 486, "Busy").reason == "Busy"
    assert make_response(req, 299).reason == "Unknown"


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = request("rfc4475_wsinv")
    assert make_response(req, 200, to_tag="other").to.tag == "1918181833n"


def test_require_content_length_on_streams() -> None:
    data = load("bad", "rfc4475_inv2543")
    exc = rejected_stream(data)
    assert re.search("Content-Length", exc.reason)


def rejected_stream(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, require_content_length=True)
    return info.value


def test_leading_crlf_before_a_message_is_ignored() -> None:
    data = b"\r\n\r\n" + load("good", "response_180")
    assert parse_message(data).call_id == "3848276298220188511@atlanta.example.com"


def test_message_without_the_empty_line_is_all_head() -> None:
    """Lenient: a datagram cut right after its last header line."""
    data = load("good", "response_180").rstrip(b"\r\n")
    assert parse_message(data).body == b""


# --------------------------------------------------------------------------------------------
# Fuzzing: parse_message raises SipParseError or succeeds, never anything else; and what it
# parses, it writes back into something it parses again to the same values.

SEEDS = [load("good", name) for name in GOOD_VECTORS] + [
    load("bad", name) for name in BAD_VECTORS if isinstance(BAD_EXPECTED[name], Accept)
]

# SIP_FUZZ_EXAMPLES=100000 for a long run; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _parse_or_refuse(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status < 600
        return
    again = parse_message(message.to_bytes())
    assert _values(again) == _values(message)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_refuse(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(["flip", "insert", "delete", "truncate", "dup_line", "byte", "digits"])
        )
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "digits":
            # A number in the head (a port, CSeq, Content-Length, status code) made into
            # digits int() refuses: a superscript, an Arabic-Indic digit, 5000 digits.
            head_end = data.find(b"\r\n\r\n")
            digits = [i for i in range(head_end) if 48 <= data[i] <= 57]
            if digits:
                i = digits[draw(st.integers(0, len(digits) - 1))]
                data[i : i + 1] = draw(st.sampled_from([b"\xc2\xb2", b"\xd9\xa3", b"7" * 5000]))
        elif kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[pos] = draw(st.sampled_from(b'\r\n\t :;,<>"\\@?=/[]%\x00\xff0123456789'))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\r\n ",
                        b":",
                        b";",
                        b",",
                        b'"',
                        b"<",
                        b">",
                        b"\x00",
                        b"\xc2\xb2",
                        b"9" * 12,
                        b"SIP/2.0",
                        b"Content-Length: 3\r\n",
                        b"v: x\r\n",
                        b"[",
                        b"]",
                    ]
                )
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup_line":
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos)
            if end > 0:
                data[start:start] = data[start : end + 1]
    return bytes(data)


@FUZZ
@given(mutated())
def test_fuzz_mutated_vectors(data: bytes) -> None:
    _parse_or_refuse(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.sampled_from(
        [
            "Via",
            "From",
            "To",
            "CSeq",
            "Call-ID",
            "Max-Forwards",
            "Content-Length",
            "Contact",
            "v",
            "f",
            "t",
            "l",
        ]
    ),
    st.text(max_size=80),
)
def test_fuzz_header_values(seed: bytes, name: str, value: str) -> None:
    """A good message with one header's value replaced by any text at all."""
    head, sep, body = seed.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines.insert(1, f"{name}: {value}".encode("utf-8", "surrogatepass"))
    _parse_or_refuse(b"\r\n".join(lines) + sep + body)
