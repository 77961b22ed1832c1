"""Writes the SIP wire vectors in ``good/`` and ``bad/`` (run: ``python tests/vectors/generate.py``).

The ``.sip`` files are the vectors the tests read; this script is how they were made, kept so
that a vector can be changed and rewritten byte for byte. Every message is written here with
``\\n`` and turned into CRLF on the way out (a vector that needs something else says so), so no
editor ever decides the line ends. ``{CL}`` is replaced by the length of the body: the part
after the first empty line.

The RFC 4475 vectors ("SIP Torture Test Messages", section 3) are the messages printed there,
with the document's <hex> and <repeat> notations expanded. The expected outcome of each is in
``tests/sip/test_message.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent

# The SDP body most RFC 4475 messages carry; {o} and {c} are the addresses in o= and c=.
SDP = (
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 {o}\n"
    "s=-\n"
    "c=IN IP4 {c}\n"
    "t=0 0\n"
    "m=audio 49217 RTP/AVP 0 12\n"
    "m=video 3227 RTP/AVP 31\n"
    "a=rtpmap:31 LPC\n"
)


def sdp(o: str, c: str | None = None) -> str:
    return SDP.format(o=o, c=c or o)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def with_length(data: bytes) -> bytes:
    if b"{CL}" not in data:
        return data
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return data.replace(b"{CL}", str(len(body)).encode())


GOOD: dict[str, bytes] = {}
BAD: dict[str, bytes] = {}

# --------------------------------------------------------------------------------------------
# Our own good vectors: what real endpoints and carriers send.

GOOD["invite_sdp"] = crlf(
    "INVITE sip:+442071234567@gw.example.net:5060;user=phone SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport\n"
    "Max-Forwards: 70\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\n'
    "To: <sip:+442071234567@gw.example.net;user=phone>\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\n"
    "CSeq: 314159 INVITE\n"
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\n"
    "Supported: timer, 100rel\n"
    "User-Agent: ExamplePhone/1.0\n"
    "Content-Type: application/sdp\n"
    "Content-Length: {CL}\n"
    "\n"
    "v=0\n"
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10\n"
    "s=-\n"
    "c=IN IP4 192.0.2.10\n"
    "t=0 0\n"
    "m=audio 49170 RTP/AVP 0 8 101\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-15\n"
    "a=sendrecv\n"
)

GOOD["compact_forms"] = crlf(
    "INVITE sip:bob@biloxi.example.com SIP/2.0\n"
    "v: SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bKcompact1\n"
    "f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\n"
    "t: Bob <sip:bob@biloxi.example.com>\n"
    "i: a84b4c76e66710@pc33.atlanta.example.com\n"
    "CSeq: 1 INVITE\n"
    "m: <sip:alice@192.0.2.20;transport=tcp>\n"
    "k: timer\n"
    "s: compact header names\n"
    "Max-Forwards: 70\n"
    "c: application/sdp\n"
    "l: {CL}\n"
    "\n"
    "v=0\n"
    "o=alice 1 1 IN IP4 192.0.2.20\n"
    "s=-\n"
    "c=IN IP4 192.0.2.20\n"
    "t=0 0\n"
    "m=audio 4000 RTP/AVP 0\n"
)

GOOD["folding_and_case"] = crlf(
    "OPTIONS sip:carol@chicago.example.com SIP/2.0\n"
    "VIA: SIP/2.0/UDP\n"
    "  pc33.atlanta.example.com:5060\n"
    "\t;branch=z9hG4bKfold1\n"
    "from: <sip:alice@atlanta.example.com>\n"
    "   ;tag=1928301774\n"
    "tO: <sip:carol@chicago.example.com>\n"
    "call-id: fold.a84b4c76e66710\n"
    "CSEQ: 63104\n"
    "  OPTIONS\n"
    "MAX-FORWARDS: 70\n"
    "Subject: a subject\n"
    "  continued on a second line\n"
    "\tand a third\n"
    "CONTENT-length: 0\n"
    "\n"
)

GOOD["comma_combined"] = crlf(
    "INVITE sip:bob@192.0.2.4 SIP/2.0\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1a, SIP/2.0/UDP p2.example.com:5070;"
    "branch=z9hG4bKp2b;received=192.0.2.2\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKua1;rport=5060;received=192.0.2.1\n"
    "Max-Forwards: 68\n"
    "Route: <sip:p3.example.com;lr>, <sip:p4.example.com;lr>\n"
    "Route: <sip:p5.example.com;lr>\n"
    "Record-Route: <sip:p2.example.com;lr>,<sip:p1.example.com;lr>\n"
    "From: <sip:alice@atlanta.example.com>;tag=a73kszlfl\n"
    "To: <sip:bob@biloxi.example.com>\n"
    "Call-ID: combined.1j9FpLxk3uxtm8tn@atlanta.example.com\n"
    "CSeq: 1 INVITE\n"
    'Contact: <sip:alice@192.0.2.1>;q=0.7;expires=3600, "Alice, mobile" <sip:alice@192.0.2.9>'
    ";q=0.1\n"
    "Supported: timer,100rel , replaces\n"
    "Content-Length: 0\n"
    "\n"
)

GOOD["display_names"] = crlf(
    "MESSAGE sip:bob@biloxi.example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKdisp1\n"
    'From: "Doe, John \\"JD\\" \\\\ <boss>" <sip:jd@example.com>;tag=abc\n'
    'To: "Bob; the builder" <sip:bob@biloxi.example.com;transport=udp>;x-param="a, b; c"\n'
    "Call-ID: display.1@192.0.2.1\n"
    "CSeq: 7 MESSAGE\n"
    "Max-Forwards: 70\n"
    'Contact: "A, B" <sip:a@192.0.2.1>, "<not a uri>" <sip:b@192.0.2.1>;q=0.5, plain token '
    "<sip:c@192.0.2.1>\n"
    "Content-Type: text/plain;charset=UTF-8\n"
    "Content-Length: {CL}\n"
    "\n"
    "Hello, \u00e9t\u00e9 \u2603\n"
)

GOOD["ipv6"] = crlf(
    "INVITE sip:user@[2001:db8::10]:5070;transport=udp SIP/2.0\n"
    "Via: SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111;rport\n"
    "Via: SIP/2.0/UDP [2001:db8::9:255];branch=z9hG4bKv6b;received=2001:db8::9:255\n"
    "Route: <sip:[2001:db8::20];lr>\n"
    "Max-Forwards: 70\n"
    "From: <sip:user@[2001:db8::9:1]>;tag=81x2\n"
    "To: <sip:user@[2001:db8::10]>\n"
    "Call-ID: SSG9559905523997077@hlau_4100\n"
    "CSeq: 1 INVITE\n"
    "Contact: <sip:user@[2001:db8::9:1]:5070>, <sip:user@[::1]>\n"
    "Content-Length: 0\n"
    "\n"
)

GOOD["opaque_schemes"] = crlf(
    "INVITE sip:+15551234567@gw.example.net;user=phone SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKtel1\n"
    "Max-Forwards: 70\n"
    'From: "Caller" <tel:+15557654321;phone-context=+1>;tag=ff01\n'
    "To: <tel:+15551234567>\n"
    "Call-ID: opaque.1@192.0.2.30\n"
    "CSeq: 1 INVITE\n"
    "Contact: <urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>, <sip:c@192.0.2.30>\n"
    "P-Asserted-Identity: <tel:+15557654321>\n"
    "Content-Length: 0\n"
    "\n"
)

GOOD["response_180"] = crlf(
    "SIP/2.0 180 Ringing\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport=5060;received=192.0.2.10\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\n'
    "To: <sip:bob@biloxi.example.com>;tag=8321234356\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\n"
    "CSeq: 314159 INVITE\n"
    "Record-Route: <sip:p1.example.com;lr>\n"
    "Contact: <sip:bob@192.0.2.4>\n"
    "Content-Length: 0\n"
    "\n"
)

GOOD["response_200_sdp"] = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport=5060;received=192.0.2.10\n"
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\n'
    "To: <sip:bob@biloxi.example.com>;tag=8321234356\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\n"
    "CSeq: 314159 INVITE\n"
    "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n"
    "Contact: <sip:bob@192.0.2.4;transport=udp>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: {CL}\n"
    "\n"
    "v=0\n"
    "o=bob 2808844564 2808844564 IN IP4 192.0.2.4\n"
    "s=-\n"
    "c=IN IP4 192.0.2.4\n"
    "t=0 0\n"
    "m=audio 3456 RTP/AVP 0\n"
    "a=rtpmap:0 PCMU/8000\n"
)

# Bare LF line ends: not RFC 3261, but many test tools and some stacks send them (lenient).
GOOD["lf_line_ends"] = (
    b"OPTIONS sip:bob@biloxi.example.com SIP/2.0\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlf1\n"
    b"From: <sip:alice@atlanta.example.com>;tag=lf\n"
    b"To: <sip:bob@biloxi.example.com>\n"
    b"Call-ID: lf.1@192.0.2.1\n"
    b"CSeq: 1 OPTIONS\n"
    b"Max-Forwards: 70\n"
    b"Content-Length: 0\n"
    b"\n"
)

# --------------------------------------------------------------------------------------------
# RFC 4475 section 3.1.1: valid messages.

GOOD["rfc4475_wsinv"] = crlf(
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
    "TO :\n"
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
    "  ;\n"
    "  tag = 98asjd8\n"
    "MaX-fOrWaRdS: 0068\n"
    "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
    "Content-Length   : 150\n"
    "cseq: 0009\n"
    "  INVITE\n"
    "Via  : SIP  /   2.0\n"
    " /UDP\n"
    "    192.0.2.2;branch=390skdjuw\n"
    "s :\n"
    "NewFangledHeader:   newfangled value\n"
    " continued newfangled value\n"
    "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
    "Content-Type: application/sdp\n"
    "Route:\n"
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
    "  branch  =   z9hG4bK9ikj8  ,\n"
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
    " z9hG4bK30239\n"
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
    "      newvalue ;\n"
    "  secondparam ; q = 0.33\n"
    "\n" + sdp("192.0.2.3", "192.0.2.4")
)

# RFC 4475 3.1.1.2, with its <allOneLine>, <hex> and UTF-8 parts written out.
GOOD["rfc4475_intmeth"] = (
    b"!interesting-Method0123456789_*+`.%indeed'~ "
    b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
    b"(doesn't-it)@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n"
    b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
    b"<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n"
    b"From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
    + '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'.encode()
    + b";tag=_token~1'+`*%!-.\r\n"
    b"Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n"
    b"CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n"
    b"Max-Forwards: 255\r\n"
    b"extensionHeader-!.%*+_`'~:" + "\ufeff\u5927\u505c\u96fb".encode() + b"\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

GOOD["rfc4475_esc01"] = crlf(
    "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
    "To: sip:%75se%72@example.com\n"
    "From: <sip:I%20have%20spaces@example.net>;tag=938\n"
    "Max-Forwards: 87\n"
    "i: esc01.239409asdfakjkn23onasd0-3234\n"
    "CSeq: 234234 INVITE\n"
    "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
    "C: application/sdp\n"
    "Contact:\n"
    "  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n"
    "Content-Length: 150\n"
    "\n" + sdp("192.0.2.1")
)

GOOD["rfc4475_escnull"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:null-%00-null@example.com\n"
    "From: sip:null-%00-null@example.com;tag=839923423\n"
    "Max-Forwards: 70\n"
    "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd\n"
    "CSeq: 14398234 REGISTER\n"
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\n"
    "Contact: <sip:%00@host5.example.com>\n"
    "Contact: <sip:%00%00@host5.example.com>\n"
    "L:0\n"
    "\n"
)

GOOD["rfc4475_esc02"] = crlf(
    "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
    'To: "%Z%45" <sip:resource@example.com>\n'
    'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23\n'
    "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\n"
    "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234\n"
    "CSeq: 29344 RE%47IST%45R\n"
    "Max-Forwards: 70\n"
    "Contact: <sip:alias1@host1.example.com>\n"
    "C%6Fntact: <sip:alias2@host2.example.com>\n"
    "Contact: <sip:alias3@host3.example.com>\n"
    "l: 0\n"
    "\n"
)

GOOD["rfc4475_lwsdisp"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: caller<sip:caller@example.com>;tag=323\n"
    "Max-Forwards: 70\n"
    "Call-ID: lwsdisp.1234abcd@funky.example.com\n"
    "CSeq: 60 OPTIONS\n"
    "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

_LONG_VIAS = (
    "".join(
        f"{name}: SIP/2.0/TCP sip{n}.example.com\n"
        for name, n in zip(
            ["Via", "v", "V", "Via", "ViA", "VIa", "VIA", "via", "viA", "vIa", "vIA"]
            + ["V ", "v ", "V  ", "v  ", "Via ", "Via  "]
            + ["Via"] * 16,
            range(33, 0, -1),
            strict=True,
        )
    )
    .replace("V : ", "V :  ")
    .replace("v : ", "v :  ")
)

GOOD["rfc4475_longreq"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    'To: "I have a user name of ' + "extreme" * 10 + ' proportion"<sip:user@example.com:6000;'
    "unknownparam1=very" + "long" * 20 + "value;"
    "longparam" + "name" * 25 + "=shortvalue;"
    "very" + "long" * 25 + "ParameterNameWithNoValue>\n"
    "F: sip:" + "amazinglylongcallername" * 5 + "@example.net;tag=12" + "982" * 50 + "424;"
    "unknownheaderparam" + "name" * 20 + "=unknowheaderparam" + "value" * 15 + ";"
    "unknownValueless" + "paramname" * 10 + "\n"
    "Call-ID: longreq.one" + "really" * 20 + "longcallid\n"
    "CSeq: 3882340 INVITE\n"
    "Unknown-" + "Long" * 20 + "-Name: unknown-" + "long" * 20 + "-value; unknown-"
    ""
    + "long" * 20
    + "-parameter-name = unknown-"
    + "long" * 20
    + "-parameter-value\n"
    + _LONG_VIAS
    + "Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very"
    + "long" * 50
    + "branchvalue\n"
    "Max-Forwards: 70\n"
    "Contact: <sip:" + "amazinglylongcallername" * 5 + "@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "l: 150\n"
    "\n" + sdp("192.0.2.1")
)

GOOD["rfc4475_dblreq"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:j.user@example.com;tag=43251j3j324\n"
    "Max-Forwards: 8\n"
    "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\n"
    "Contact: sip:j.user@host.example.com\n"
    "CSeq: 8 REGISTER\n"
    "Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\n"
    "Content-Length: 0\n"
    "\n"
    "INVITE sip:joe@example.com SIP/2.0\n"
    "t: sip:joe@example.com\n"
    "From: sip:caller@example.net;tag=141334\n"
    "Max-Forwards: 8\n"
    "Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n" + sdp("192.0.2.15").replace("m=video", "m =video")
)

GOOD["rfc4475_semiuri"] = crlf(
    "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "From: sip:caller@example.org;tag=33242\n"
    "Max-Forwards: 3\n"
    "Call-ID: semiuri.0ha0isndaksdj\n"
    "CSeq: 8 OPTIONS\n"
    "Accept: application/sdp, application/pkcs7-mime,\n"
    "        multipart/mixed, multipart/signed,\n"
    "        message/sip, message/sipfrag\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

GOOD["rfc4475_transports"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: <sip:caller@example.com>;tag=323\n"
    "Max-Forwards: 70\n"
    "Call-ID:  transports.kijh4akdnaqjkwendsasfdj\n"
    "Accept: application/sdp\n"
    "CSeq: 60 OPTIONS\n"
    "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
    "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
    "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
    "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
    "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\n"
    "l: 0\n"
    "\n"
)

# RFC 4475 3.1.1.11. The second body part of the RFC is a DER blob; ours is another binary
# blob of our own, with NULs, CRs, LFs and bytes that are not UTF-8, and Content-Length fits it.
_BLOB = bytes(range(256)) + b"\r\n\r\n\x00\x00\r\n--7a9cbec02ceef65\xff\xfe"
_MPART_BODY = (
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n" + _BLOB + b"\r\n"
    b"--7a9cbec02ceef655--\r\n"
)
GOOD["rfc4475_mpart01"] = (
    crlf(
        "MESSAGE sip:kumiko@example.org SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\n"
        "Max-Forwards: 70\n"
        "Route: <sip:127.0.0.1:5080>\n"
        "Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+"
        "813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUh"
        "kMWYUA=\n"
        "Contact: <sip:fluffy@127.0.0.1:5070>\n"
        "To: <sip:kumiko@example.org>\n"
        "From: <sip:fluffy@example.com>;tag=2fb0dcc9\n"
        "Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..\n"
        "CSeq: 1 MESSAGE\n"
        "Content-Transfer-Encoding: binary\n"
        "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655\n"
        "Date: Sat, 15 Oct 2005 04:44:56 GMT\n"
        "User-Agent: SIPimp.org/0.2.5 (curses)\n"
        "Content-Length: {CL}\n"
        "\n"
    )
    + _MPART_BODY
)

GOOD["rfc4475_unreason"] = crlf(
    "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d"
    "\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441"
    "\u0442\u043e\u0435\n"
    "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
    "Call-ID: unreason.1234ksdfak3j2erwedfsASdf\n"
    "CSeq: 35 INVITE\n"
    "From: sip:user@example.com;tag=11141343\n"
    "To: sip:user@example.edu;tag=2229\n"
    "Content-Length: 154\n"
    "Content-Type: application/sdp\n"
    "Contact: <sip:user@host198.example.com>\n"
    "\n" + sdp("192.0.2.198")
)

GOOD["rfc4475_noreason"] = crlf(
    "SIP/2.0 100 \n"
    "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
    "Call-ID: noreason.asndj203insdf99223ndf\n"
    "CSeq: 35 INVITE\n"
    "From: <sip:user@example.com>;tag=39ansfi3\n"
    "To: <sip:user@example.edu>;tag=902jndnke3\n"
    "Content-Length: 0\n"
    "Contact: <sip:user@host105.example.com>\n"
    "\n"
)

# --------------------------------------------------------------------------------------------
# RFC 4475 sections 3.1.2 (invalid messages) and 3.3 (application-layer semantics): messages an
# element must not treat as normal. Some fail to parse; others parse and it is for the
# application to refuse them (the tests say which, and what).

BAD["rfc4475_badinv01"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=134161461246\n"
    "Max-Forwards: 7\n"
    "Call-ID: badinv01.0ha0isndaksdjasdf3234nas\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;;,;,,\n"
    'Contact: "Joe" <sip:joe@example.org>;;;;\n'
    "Content-Length: 152\n"
    "Content-Type: application/sdp\n"
    "\n" + sdp("192.0.2.15")
)

BAD["rfc4475_clerr"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Max-Forwards: 80\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=93942939o2\n"
    "Contact: <sip:caller@hungry.example.net>\n"
    "Call-ID: clerr.0ha0isndaksdjweiafasdk3\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 9999\n"
    "\n" + sdp("192.0.2.155")
)

BAD["rfc4475_ncl"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Max-Forwards: 254\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=32394234\n"
    "Call-ID: ncl.0ha0isndaksdj2193423r542w35\n"
    "CSeq: 0 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw\n"
    "Contact: <sip:caller@example53.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: -999\n"
    "\n" + sdp("192.0.2.53")
)

# RFC 4475 3.1.2.3 names this variant in its text ("Content-Length: five").
BAD["rfc4475_ncl_five"] = BAD["rfc4475_ncl"].replace(b"-999", b"five")

BAD["rfc4475_scalar02"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3\n"
    "To: <sip:user@example.com>\n"
    "From: <sip:user@example.com>;tag=239232jh3\n"
    "CSeq: 36893488147419103232 REGISTER\n"
    "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\n"
    "Max-Forwards: 300\n"
    "Expires: 1" + "0" * 100 + "\n"
    "Contact: <sip:user@host129.example.com>\n"
    "  ;expires=280297596632815\n"
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_scalarlg"] = crlf(
    "SIP/2.0 503 Service Unavailable\n"
    "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129\n"
    "To: <sip:user@example.com>\n"
    "From: <sip:other@example.net>;tag=2easdjfejw\n"
    "CSeq: 9292394834772304023312 OPTIONS\n"
    "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r\n"
    "Retry-After: 949302838503028349304023988\n"
    'Warning: 1812 overture "In Progress"\n'
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_quotbal"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    'To: "Mr. J. User <sip:j.user@example.com>\n'
    "From: sip:caller@example.net;tag=93334\n"
    "Max-Forwards: 10\n"
    "Call-ID: quotbal.aksdj\n"
    "Contact: <sip:caller@host59.example.net>\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 152\n"
    "\n" + sdp("192.0.2.15")
)

BAD["rfc4475_ltgtruri"] = crlf(
    "INVITE <sip:user@example.com> SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=39291\n"
    "Max-Forwards: 23\n"
    "Call-ID: ltgtruri.1@192.0.2.5\n"
    "CSeq: 1 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.5\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 159\n"
    "\n" + sdp("192.0.2.5").replace("t=0 0", "t=3149328700 0")
)

BAD["rfc4475_lwsruri"] = crlf(
    "INVITE sip:user@example.com; lr SIP/2.0\n"
    "To: sip:user@example.com;tag=3xfe-9921883-z9f\n"
    "From: sip:caller@example.net;tag=231413434\n"
    "Max-Forwards: 5\n"
    "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423\n"
    "CSeq: 2130706432 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395\n"
    "Contact: <sip:caller@host1.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 159\n"
    "\n" + sdp("192.0.2.1").replace("t=0 0", "t=3149328700 0")
)

BAD["rfc4475_lwsstart"] = crlf(
    "INVITE  sip:user@example.com  SIP/2.0\n"
    "Max-Forwards: 8\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=8814\n"
    "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\n"
    "CSeq: 1893884 INVITE\n"
    "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\n"
    "Contact: <sip:caller@host1.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n" + sdp("192.0.2.1")
)

BAD["rfc4475_trws"] = crlf(
    "OPTIONS sip:remote-target@example.com SIP/2.0  \n"
    "Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093\n"
    "To: <sip:remote-target@example.com>\n"
    "From: <sip:local-resource@example.com>;tag=329429089\n"
    "Call-ID: trws.oicu34958239neffasdhr2345r\n"
    "Accept: application/sdp\n"
    "CSeq: 238923 OPTIONS\n"
    "Max-Forwards: 70\n"
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_escruri"] = crlf(
    "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=341518\n"
    "Max-Forwards: 7\n"
    "Contact: <sip:caller@host39923.example.net>\n"
    "Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5\n"
    "CSeq: 149209342 INVITE\n"
    "Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n" + sdp("192.0.2.1")
)

BAD["rfc4475_baddate"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=2234923\n"
    "Max-Forwards: 70\n"
    "Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234\n"
    "CSeq: 1392934 INVITE\n"
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
    "Date: Fri, 01 Jan 2010 16:00:00 EST\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: 150\n"
    "\n" + sdp("192.0.2.5")
)

BAD["rfc4475_regbadct"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:user@example.com;tag=998332\n"
    "Max-Forwards: 70\n"
    "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\n"
    "CSeq: 1 REGISTER\n"
    "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\n"
    "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_badaspec"] = crlf(
    "OPTIONS sip:user@example.org SIP/2.0\n"
    "Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234\n"
    "Max-Forwards: 70\n"
    'From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423\n'
    'To: "Watson, Thomas" < sip:t.watson@example.org >\n'
    "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3\n"
    "Accept: application/sdp\n"
    "CSeq: 3923239 OPTIONS\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_baddn"] = crlf(
    "OPTIONS sip:t.watson@example.org SIP/2.0\n"
    "Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards:      70\n"
    "From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43\n"
    "To:      Watson, Thomas <sip:t.watson@example.org>\n"
    "Call-ID: baddn.31415@c.example.com\n"
    "Accept: application/sdp\n"
    "CSeq:    3923239 OPTIONS\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_badvers"] = crlf(
    "OPTIONS sip:t.watson@example.org SIP/7.0\n"
    "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\n"
    "Max-Forwards:     70\n"
    "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\n"
    "To:      T. Watson <sip:t.watson@example.org>\n"
    "Call-ID: badvers.31417@c.example.com\n"
    "CSeq:    1 OPTIONS\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_mismatch01"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=34525\n"
    "Max-Forwards: 6\n"
    "Call-ID: mismatch01.dj0234sxdfl3\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_mismatch02"] = crlf(
    "NEWMETHOD sip:user@example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=34525\n"
    "Max-Forwards: 6\n"
    "Call-ID: mismatch02.dj0234sxdfl3\n"
    "CSeq: 8 INVITE\n"
    "Contact: <sip:caller@host.example.net>\n"
    "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/sdp\n"
    "l: 138\n"
    "\n"
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.1\n"
    "c=IN IP4 192.0.2.1\n"
    "m=audio 49217 RTP/AVP 0 12\n"
    "m=video 3227 RTP/AVP 31\n"
    "a=rtpmap:31 LPC\n"
)

BAD["rfc4475_bigcode"] = crlf(
    "SIP/2.0 4294967301 better not break the receiver\n"
    "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\n"
    "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i\n"
    "CSeq: 353494 INVITE\n"
    "From: <sip:user@example.com>;tag=39ansfi3\n"
    "To: <sip:user@example.edu>;tag=902jndnke3\n"
    "Content-Length: 0\n"
    "Contact: <sip:user@host105.example.com>\n"
    "\n"
)

BAD["rfc4475_badbranch"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.org;tag=33242\n"
    "Max-Forwards: 3\n"
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\n"
    "Accept: application/sdp\n"
    "Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n\n"
    "CSeq: 8 OPTIONS\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_insuf"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "CSeq: 193942 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\n"
    "Content-Type: application/sdp\n"
    "l: 152\n"
    "\n" + sdp("192.0.2.95")
)

BAD["rfc4475_mcl01"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423\n"
    "To: sip:user@example.com\n"
    "From: sip:other@example.net;tag=3923942\n"
    "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf\n"
    "CSeq: 15932 OPTIONS\n"
    "Content-Length: 13\n"
    "Max-Forwards: 60\n"
    "Content-Length: 5\n"
    "Content-Type: text/plain\n"
    "\n"
    "There's no way to know how many octets are supposed to be here.\n"
)

BAD["rfc4475_multi01"] = crlf(
    "INVITE sip:user@company.com SIP/2.0\n"
    "Contact: <sip:caller@host25.example.net>\n"
    "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "CSeq: 5 INVITE\n"
    "Call-ID: multi01.98asdh@192.0.2.1\n"
    "CSeq: 59 INVITE\n"
    "Call-ID: multi01.98asdh@192.0.2.2\n"
    "From: sip:caller@example.com;tag=3413415\n"
    "To: sip:user@example.com\n"
    "To: sip:other@example.net\n"
    "From: sip:caller@example.net;tag=2923420123\n"
    "Content-Type: application/sdp\n"
    "l: 154\n"
    "Contact: <sip:caller@host36.example.net>\n"
    "Max-Forwards: 5\n"
    "\n" + sdp("192.0.2.25")
)

BAD["rfc4475_bcast"] = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\n"
    "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23\n"
    "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\n"
    "CSeq: 35 INVITE\n"
    "From: sip:user@example.com;tag=11141343\n"
    "To: sip:user@example.edu;tag=2229\n"
    "Content-Length: 154\n"
    "Content-Type: application/sdp\n"
    "Contact: <sip:user@host28.example.com>\n"
    "\n" + sdp("192.0.2.198")
)

BAD["rfc4475_bext01"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "From: sip:caller@example.net;tag=242etr\n"
    "Max-Forwards: 6\n"
    "Call-ID: bext01.0ha0isndaksdj\n"
    "Require: nothingSupportsThis, nothingSupportsThisEither\n"
    "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\n"
    "CSeq: 8 OPTIONS\n"
    "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_cparam01"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe\n"
    "To: sip:watson@example.com\n"
    "Call-ID: cparam01.70710@saturn.example.com\n"
    "CSeq: 2 REGISTER\n"
    "Contact: sip:+19725552222@gw1.example.net;unknownparam\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_cparam02"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\n"
    "Max-Forwards: 70\n"
    "From: sip:watson@example.com;tag=838293\n"
    "To: sip:watson@example.com\n"
    "Call-ID: cparam02.70710@saturn.example.com\n"
    "CSeq: 3 REGISTER\n"
    "Contact: <sip:+19725552222@gw1.example.net;unknownparam>\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_inv2543"] = crlf(
    "INVITE sip:UserB@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP iftgw.example.com\n"
    "From: <sip:+13035551111@ift.client.example.net;user=phone>\n"
    "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\n"
    "To: sip:+16505552222@ss1.example.net;user=phone\n"
    "Call-ID: inv2543.1717@ift.client.example.com\n"
    "CSeq: 56 INVITE\n"
    "Content-Type: application/sdp\n"
    "\n"
    "v=0\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.5\n"
    "s=-\n"
    "c=IN IP4 192.0.2.5\n"
    "t=0 0\n"
    "m=audio 49217 RTP/AVP 0\n"
)

BAD["rfc4475_invut"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "Contact: <sip:caller@host5.example.net>\n"
    "To: sip:j.user@example.com\n"
    "From: sip:caller@example.net;tag=8392034\n"
    "Max-Forwards: 70\n"
    "Call-ID: invut.0ha0isndaksdjadsfij34n23d\n"
    "CSeq: 235448 INVITE\n"
    "Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw\n"
    "Content-Type: application/unknownformat\n"
    "Content-Length: 40\n"
    "\n"
    "<audio>\n"
    ' <pcmu port="443"/>\n'
    "</audio>\n"
)

BAD["rfc4475_regaut01"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: sip:j.user@example.com\n"
    "From: sip:j.user@example.com;tag=87321hj23128\n"
    "Max-Forwards: 8\n"
    "Call-ID: regaut01.0ha0isndaksdj\n"
    "CSeq: 9338 REGISTER\n"
    "Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw\n"
    "Authorization: NoOneKnowsThisScheme opaque-data=here\n"
    "Content-Length:0\n"
    "\n"
)

BAD["rfc4475_sdp01"] = crlf(
    "INVITE sip:user@example.com SIP/2.0\n"
    "To: sip:j_user@example.com\n"
    "Contact: <sip:caller@host15.example.net>\n"
    "From: sip:caller@example.net;tag=234\n"
    "Max-Forwards: 5\n"
    "Call-ID: sdp01.ndaksdj9342dasdd\n"
    "Accept: text/nobodyKnowsThis\n"
    "CSeq: 8 INVITE\n"
    "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw\n"
    "Content-Length: 150\n"
    "Content-Type: application/sdp\n"
    "\n" + sdp("192.0.2.5")
)

BAD["rfc4475_unkscm"] = crlf(
    "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=384\n"
    "Max-Forwards: 3\n"
    "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34\n"
    "CSeq: 3923423 OPTIONS\n"
    "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_novelsc"] = crlf(
    "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=384\n"
    "Max-Forwards: 3\n"
    "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34\n"
    "CSeq: 3923423 OPTIONS\n"
    "Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234\n"
    "Content-Length: 0\n"
    "\n"
)

BAD["rfc4475_unksm2"] = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "To: isbn:2983792873\n"
    "From: <http://www.example.com>;tag=3234233\n"
    "Call-ID: unksm2.daksdj@hyphenated-host.example.com\n"
    "CSeq: 234902 REGISTER\n"
    "Max-Forwards: 70\n"
    "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\n"
    "Contact: <name:John_Smith>\n"
    "l: 0\n"
    "\n"
)

BAD["rfc4475_zeromf"] = crlf(
    "OPTIONS sip:user@example.com SIP/2.0\n"
    "To: sip:user@example.com\n"
    "From: sip:caller@example.net;tag=3ghsd41\n"
    "Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas\n"
    "CSeq: 39234321 OPTIONS\n"
    "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i\n"
    "Max-Forwards: 0\n"
    "Content-Length: 0\n"
    "\n"
)

# --------------------------------------------------------------------------------------------
# Our own bad vectors: faults seen in the field, one per message.

_BASE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbase1\n"
    "Max-Forwards: 70\n"
    "From: <sip:alice@atlanta.example.com>;tag=base\n"
    "To: <sip:bob@biloxi.example.com>\n"
    "Call-ID: base.1@192.0.2.1\n"
    "CSeq: 1 INVITE\n"
    "Contact: <sip:alice@192.0.2.1>\n"
    "Content-Length: 0\n"
    "\n"
)


def _base(old: str, new: str) -> bytes:
    assert old in _BASE, old
    return crlf(_BASE.replace(old, new))


BAD["via_bad_port"] = _base("192.0.2.1:5060;", "192.0.2.1:50x6O;")
BAD["via_no_sent_by"] = _base("SIP/2.0/UDP 192.0.2.1:5060;", "SIP/2.0/UDP ;")
BAD["via_missing"] = _base("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbase1\n", "")
BAD["from_missing"] = _base("From: <sip:alice@atlanta.example.com>;tag=base\n", "")
BAD["to_garbage"] = _base("To: <sip:bob@biloxi.example.com>", "To: bob at biloxi")
BAD["call_id_missing"] = _base("Call-ID: base.1@192.0.2.1\n", "")
BAD["cseq_not_a_number"] = _base("CSeq: 1 INVITE", "CSeq: one INVITE")
BAD["cseq_superscript_digit"] = _base("CSeq: 1 INVITE", "CSeq: \u00b2 INVITE")
BAD["max_forwards_word"] = _base("Max-Forwards: 70", "Max-Forwards: seventy")
BAD["content_length_superscript"] = _base("Content-Length: 0", "Content-Length: \u00b9")
BAD["content_length_huge"] = _base("Content-Length: 0", "Content-Length: " + "9" * 5000)
BAD["content_length_twice_equal"] = _base(
    "Content-Length: 0\n", "Content-Length: 0\nContent-Length: 0\n"
)
BAD["header_without_colon"] = _base("Max-Forwards: 70", "Max-Forwards 70")
BAD["continuation_first"] = crlf(_BASE.replace("SIP/2.0\n", "SIP/2.0\n folded: nothing\n", 1))
BAD["request_line_two_parts"] = _base("INVITE sip:bob@biloxi.example.com SIP/2.0", "INVITE sip:bob")
BAD["request_uri_no_scheme"] = _base(
    "INVITE sip:bob@biloxi.example.com SIP/2.0", "INVITE bob@biloxi.example.com SIP/2.0"
)
BAD["method_not_token"] = _base(
    "INVITE sip:bob@biloxi.example.com SIP/2.0", "IN(VITE sip:b SIP/2.0"
)
BAD["status_letters"] = crlf(
    "SIP/2.0 2OO OK\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbase1\n"
    "From: <sip:alice@atlanta.example.com>;tag=base\n"
    "To: <sip:bob@biloxi.example.com>;tag=b\n"
    "Call-ID: base.1@192.0.2.1\n"
    "CSeq: 1 INVITE\n"
    "Content-Length: 0\n"
    "\n"
)
BAD["status_99"] = BAD["status_letters"].replace(b"2OO OK", b"099 Too Low")
BAD["status_superscript"] = BAD["status_letters"].replace(b"2OO", "\u00b2\u00b2\u00b2".encode())
BAD["response_sip3"] = BAD["status_letters"].replace(b"SIP/2.0 2OO", b"SIP/3.0 200")
BAD["empty"] = b""
BAD["only_crlf"] = b"\r\n\r\n\r\n"
BAD["binary_noise"] = bytes(range(256))


def write() -> None:
    for folder, vectors in (("good", GOOD), ("bad", BAD)):
        path = HERE / folder
        path.mkdir(exist_ok=True)
        wanted = {f"{name}.sip" for name in vectors}
        for old in path.glob("*.sip"):
            if old.name not in wanted:
                old.unlink()
        for name, data in vectors.items():
            (path / f"{name}.sip").write_bytes(with_length(data))


if __name__ == "__main__":
    write()
    sys.exit(0)
