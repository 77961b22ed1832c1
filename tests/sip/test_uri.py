"""SIP URIs, name-addr values, Via, CSeq, and the grammar helpers under them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.grammar import (
    canonical_name,
    format_params,
    is_digits,
    parse_params,
    quote,
    split_outside_quotes,
    split_values,
    unquote,
)
from smartswitch.sip.uri import (
    CSeq,
    NameAddr,
    SipUri,
    Via,
    format_host,
    parse_hostport,
    split_name_addrs,
)


def refused(call: object, *args: str) -> SipParseError:
    assert callable(call)
    with pytest.raises(SipParseError) as info:
        call(*args)
    return info.value


# --- SipUri ---------------------------------------------------------------------------------


def test_sip_uri_parts() -> None:
    uri = SipUri.parse("sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr?subject=x&p=1")
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("atlanta.example.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == "subject=x&p=1"
    assert uri.transport == "tcp"
    assert str(uri) == "sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr?subject=x&p=1"


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("sip:example.com", None, "example.com", None),
        ("SIP:Bob@Example.COM", "Bob", "Example.COM", None),  # the scheme is case-insensitive
        ("sips:bob@192.0.2.4:5061", "bob", "192.0.2.4", 5061),
        ("sip:[2001:db8::1]", None, "2001:db8::1", None),
        ("sip:alice@[2001:db8::1]:5080", "alice", "2001:db8::1", 5080),
        ("sip:+15551234567;npdi@gw.example.net", "+15551234567;npdi", "gw.example.net", None),
        # RFC 4475 intmeth: "?" and ";" are legal in the user part; the first "@" ends it.
        ("sip:a?b;c=d@example.com;lr", "a?b;c=d", "example.com", None),
        (
            "sip:user;par=u%40example.net@example.com",
            "user;par=u%40example.net",
            "example.com",
            None,
        ),
    ],
)
def test_sip_uri_forms(text: str, user: str | None, host: str, port: int | None) -> None:
    uri = SipUri.parse(text)
    assert (uri.user, uri.host, uri.port) == (user, host, port)


def test_sip_uri_defaults() -> None:
    uri = SipUri.parse("sips:example.com")
    assert uri.scheme == "sips"
    assert uri.transport == "udp"  # the parameter's default; dialog.uri_address maps sips to TLS
    assert uri.params == {} and uri.headers == "" and uri.password is None


def test_ipv6_hosts_are_kept_bare_and_written_bracketed() -> None:
    uri = SipUri.parse("sip:[::1]:5060;transport=udp")
    assert uri.host == "::1"
    assert str(uri) == "sip:[::1]:5060;transport=udp"
    assert format_host("::1") == "[::1]"
    assert format_host("192.0.2.1") == "192.0.2.1"


@pytest.mark.parametrize(
    ("text", "status", "fault"),
    [
        ("tel:+15551234567", 416, "not a SIP URI"),
        ("http://example.com", 416, "not a SIP URI"),
        ("sipexample.com", 416, "not a SIP URI"),
        ("sip:", 400, "missing host"),
        ("sip:alice@", 400, "missing host"),
        ("sip:alice@example.com:port", 400, "bad port"),
        ("sip:alice@example.com:0", 400, "bad port"),
        ("sip:alice@example.com:65536", 400, "bad port"),
        ("sip:alice@example.com:\u00b9", 400, "bad port"),  # isdigit() but not int()-able
        ("sip:alice@example.com:" + "1" * 5000, 400, "bad port"),  # int() refuses > 4300 digits
        ("sip:[2001:db8::1", 400, "unterminated IPv6"),
        ("sip:[2001:db8::1]5060", 400, "bad IPv6"),
        ("sip:[]:5060", 400, "empty IPv6"),
        ("sip:a b@exa mple.com", 400, "bad host"),
        ('sip:example.com">', 400, "bad host"),
    ],
)
def test_sip_uri_errors(text: str, status: int, fault: str) -> None:
    exc = refused(SipUri.parse, text)
    assert exc.status == status
    assert fault in exc.reason


def test_parse_hostport() -> None:
    assert parse_hostport("example.com") == ("example.com", None)
    assert parse_hostport(" example.com:5060 ") == ("example.com", 5060)
    assert parse_hostport("[::1]:5062") == ("::1", 5062)
    assert "missing host" in refused(parse_hostport, "").reason


_user = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/%", min_size=1)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses().map(str),
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.sampled_from(["sip", "sips"]),
    st.none() | _user,
    _host,
    st.none() | st.integers(1, 65535),
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
        st.none() | st.from_regex(r"[a-zA-Z0-9.\-]{1,10}", fullmatch=True),
        max_size=3,
    ),
)
def test_sip_uri_round_trip(
    scheme: str, user: str | None, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    uri = SipUri(scheme, user, host, port, params)
    again = SipUri.parse(str(uri))
    assert again == uri


# --- NameAddr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:a@example.com>", None, "sip:a@example.com", {}),
        ("sip:a@example.com;tag=1", None, "sip:a@example.com", {"tag": "1"}),
        ('"Alice" <sip:a@example.com>;tag=1', "Alice", "sip:a@example.com", {"tag": "1"}),
        ("Alice Smith <sip:a@example.com>", "Alice Smith", "sip:a@example.com", {}),
        (
            "caller<sip:caller@example.com>;tag=323",
            "caller",
            "sip:caller@example.com",
            {"tag": "323"},
        ),
        ('"a \\"b\\" \\\\ c" <sip:x@y>', 'a "b" \\ c', "sip:x@y", {}),
        ('"<sip:fake@x>" <sip:real@y>', "<sip:fake@x>", "sip:real@y", {}),
        ('"" <sip:x@y>', "", "sip:x@y", {}),  # an empty display name, written as none
        (
            "<sip:a@example.com;transport=tcp>;expires=60",
            None,
            "sip:a@example.com;transport=tcp",
            {"expires": "60"},
        ),
        ("  <tel:+15551234567>  ", None, "tel:+15551234567", {}),
        ("urn:service:sos", None, "urn:service:sos", {}),
        ("<sip:a@x>;TAG=Ab;Lr", None, "sip:a@x", {"tag": "Ab", "lr": None}),
    ],
)
def test_name_addr_forms(text: str, display: str | None, uri: str, params: dict[str, str]) -> None:
    addr = NameAddr.parse(text)
    assert (addr.display, addr.uri, addr.params) == (display, uri, params)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "empty address"),
        ("   ", "empty address"),
        ('"Mr. J. User <sip:j.user@example.com>', "bad address"),  # RFC 4475 quotbal
        ("<sip:a@example.com", "unterminated"),
        ("<sip:a@example.com> junk", "junk after address"),
        ("Bob sip:bob@example.com", "bad address"),
        ("bob", "bad address"),
        ("<bob>", "without a URI scheme"),
        # RFC 3261 20.10 and RFC 4475 regbadct: a URI with headers must be in <>.
        ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "URI with headers outside <>"),
    ],
)
def test_name_addr_errors(text: str, fault: str) -> None:
    exc = refused(NameAddr.parse, text)
    assert exc.status == 400
    assert fault in exc.reason


def test_name_addr_with_headers_inside_brackets_is_fine() -> None:
    addr = NameAddr.parse("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
    assert addr.sip_uri().headers == "Route=%3Csip:sip.example.com%3E"


def test_name_addr_tag_and_sip_uri() -> None:
    addr = NameAddr.parse('"Bob" <sip:bob@[2001:db8::2]:5070>;tag=xyz')
    assert addr.tag == "xyz"
    assert (addr.sip_uri().host, addr.sip_uri().port) == ("2001:db8::2", 5070)
    assert NameAddr.parse("<sip:bob@x>").tag is None


def test_name_addr_is_written_with_brackets_and_quoted_display() -> None:
    assert str(NameAddr.parse("sip:a@x;tag=1")) == "<sip:a@x>;tag=1"
    assert str(NameAddr.parse("Alice <sip:a@x>")) == '"Alice" <sip:a@x>'
    # Escapes in a display name survive being written (a quote or backslash in it would
    # otherwise end the quoted-string early).
    addr = NameAddr.parse('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>')
    assert addr.display == 'J Rosenberg \\"'
    assert str(addr) == '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>'
    assert NameAddr.parse(str(addr)) == addr


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), min_size=1))
def test_display_name_round_trip(display: str) -> None:
    if not display.strip():
        return  # a blank display name is no display name
    addr = NameAddr("sip:a@example.com", display.strip(), {"tag": "1"})
    again = NameAddr.parse(str(addr))
    assert again == addr


def test_split_name_addrs() -> None:
    values = split_name_addrs('"A, B" <sip:a@x>;q=0.5, <sip:b@y>,sip:c@z ,  ')
    assert [(v.display, v.uri, v.params) for v in values] == [
        ("A, B", "sip:a@x", {"q": "0.5"}),
        (None, "sip:b@y", {}),
        (None, "sip:c@z", {}),
    ]


# --- Via -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "params"),
    [
        (
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            "UDP",
            "192.0.2.1",
            5060,
            {"branch": "z9hG4bK1"},
        ),
        ("SIP/2.0/tcp host.example.com", "TCP", "host.example.com", None, {}),
        (
            "sip/2.0/TLS h;rport;received=192.0.2.9",
            "TLS",
            "h",
            None,
            {"rport": None, "received": "192.0.2.9"},
        ),
        # RFC 4475 wsinv: white space around the slashes and before the parameters.
        (
            "SIP  /   2.0 /UDP  192.0.2.2;branch=390skdjuw",
            "UDP",
            "192.0.2.2",
            None,
            {"branch": "390skdjuw"},
        ),
        (
            "SIP / 2.0 / TCP  spindle.example.com   ;  branch  =   z9hG4bK9ikj8",
            "TCP",
            "spindle.example.com",
            None,
            {"branch": "z9hG4bK9ikj8"},
        ),
        ("SIP/2.0/UDP\t192.0.2.1", "UDP", "192.0.2.1", None, {}),
        (
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKx",
            "UDP",
            "2001:db8::9:1",
            5070,
            {"branch": "z9hG4bKx"},
        ),
        (
            "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            "UNKNOWN",
            "t4.example.com",
            None,
            {"branch": "z9hG4bKasd0f3en"},
        ),
    ],
)
def test_via_forms(
    text: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = Via.parse(text)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "bad Via protocol"),
        (";", "bad Via protocol"),  # RFC 4475 badinv01 leaves ";" entries
        ("SIP/2.0 192.0.2.1", "bad Via protocol"),
        ("SIP/3.0/UDP 192.0.2.1", "bad Via protocol"),
        ("HTTP/2.0/UDP 192.0.2.1", "bad Via protocol"),
        ("SIP/2.0/UDP", "missing sent-by"),
        ("SIP/2.0/UDP ;branch=z9hG4bK1", "missing sent-by"),
        ("SIP/2.0/UDP 192.0.2.1:50x6O;branch=z9hG4bK1", "bad port"),
        ("SIP/2.0/UDP [::1;branch=z9hG4bK1", "unterminated IPv6"),
    ],
)
def test_via_errors(text: str, fault: str) -> None:
    assert fault in refused(Via.parse, text).reason


def test_via_written_back() -> None:
    via = Via.parse("SIP / 2.0 / udp [::1]:5060 ; branch = z9hG4bKa ; rport")
    assert via.branch == "z9hG4bKa"
    assert str(via) == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKa;rport"
    via.params["rport"] = "40000"
    via.params["received"] = "192.0.2.7"
    assert str(via) == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKa;rport=40000;received=192.0.2.7"


# --- CSeq ----------------------------------------------------------------------------------


def test_cseq() -> None:
    assert CSeq.parse("0009  INVITE") == CSeq(9, "INVITE")  # leading zeros (RFC 4475 wsinv)
    assert CSeq.parse(" 2147483647   BYE ") == CSeq(2**31 - 1, "BYE")
    assert str(CSeq(1, "ACK")) == "1 ACK"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "INVITE",
        "1",
        "one INVITE",
        "-1 INVITE",
        "1 INVITE x",
        "2147483648 INVITE",
        "36893488147419103232 REGISTER",
        "\u00b2 INVITE",
        "\u0663 INVITE",
    ],
)
def test_cseq_errors(text: str) -> None:
    assert "CSeq" in refused(CSeq.parse, text).reason


# --- grammar helpers -----------------------------------------------------------------------


def test_split_outside_quotes_and_brackets() -> None:
    assert split_outside_quotes("a,b", ",") == ["a", "b"]
    assert split_outside_quotes('"x,y",<a,b>,c', ",") == ['"x,y"', "<a,b>", "c"]
    assert split_outside_quotes('"x\\",y",z', ",") == ['"x\\",y"', "z"]  # escaped quote
    assert split_outside_quotes("no separator", ",") == ["no separator"]
    assert split_values(" a , ,b,") == ["a", "b"]


def test_params() -> None:
    assert parse_params(';A=1; b ; c = "x;y" ;') == {"a": "1", "b": None, "c": '"x;y"'}
    assert parse_params("") == {}
    assert format_params({"lr": None, "tag": "1"}) == ";lr;tag=1"


def test_quote_and_unquote() -> None:
    assert unquote('"a\\"b\\\\c"') == 'a"b\\c'
    assert unquote("  plain  ") == "plain"
    assert unquote('"unterminated') == '"unterminated'
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


@given(st.text())
def test_quote_round_trip(text: str) -> None:
    assert unquote(quote(text)) == text


def test_canonical_names() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("x-my-header") == "X-My-Header"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0", True),
        ("0068", True),
        ("1234567890", True),
        ("12345678901", False),
        ("", False),
        ("-1", False),
        ("\u00b2", False),
        ("\u0663", False),
        ("1 2", False),
    ],
)
def test_is_digits(text: str, ok: bool) -> None:
    assert is_digits(text, 10) is ok
