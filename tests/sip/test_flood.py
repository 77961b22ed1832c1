"""The flood gate (smartswitch.sip.flood) on a virtual clock, alone and inside the transaction
layer: per-source and overall rates, requests dropped and counted, answers to unidentified UDP
sources never bigger than the request (challenges trimmed first), the 100 Trying held back,
and the meter lifted by the user once it knows the sender."""

from __future__ import annotations

from sip.test_transaction import Recorder, sent
from smartswitch.sip.flood import FloodGate, FloodSettings
from smartswitch.sip.message import Request, Response, make_response
from smartswitch.sip.transaction import Address, ServerTransaction, TransactionLayer

TRUNK = Address("udp", "192.0.2.10", 5060)
STRANGER = Address("udp", "198.51.100.7", 5060)
STRANGER_TCP = Address("tcp", "198.51.100.7", 40000)
CHALLENGE = 'Digest realm="smartswitch", nonce="{n}", algorithm={a}, qop="auth"'


def gate(**settings: float) -> FloodGate:
    return FloodGate(
        FloodSettings(**settings),  # type: ignore[arg-type]
        identified=lambda transport, host, port: host == TRUNK.host,
    )


def invite(n: int = 1, source: Address = STRANGER, body: bytes = b"", extra: str = "") -> bytes:
    via = f"SIP/2.0/{source.transport.upper()} {source.host}:{source.port}"
    lines = [
        "INVITE sip:15551234567@192.0.2.2 SIP/2.0",
        f"Via: {via};branch=z9hG4bK-flood-{n}",
        f"From: <sip:100@{source.host}>;tag=f{n}",
        "To: <sip:15551234567@192.0.2.2>",
        f"Call-ID: flood-{n}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:100@{source.host}:{source.port}>",
        "Max-Forwards: 70",
    ]
    if extra:
        lines.append(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def challenger(*algorithms: str) -> tuple[TransactionLayer, Recorder]:
    """A gated layer whose user answers every request with a 407 offering ``algorithms``."""

    def answer(tx: ServerTransaction, request: Request, now: float) -> None:
        response = make_response(request, 407, None, "tag1")
        for algorithm in algorithms:
            response.headers.add("Proxy-Authenticate", CHALLENGE.format(n="x" * 60, a=algorithm))
        layer.respond(tx, response, now)

    user = Recorder(on_request_do=answer)
    layer = TransactionLayer(user, {"udp": ("192.0.2.2", 5060), "tcp": ("192.0.2.2", 5060)})
    layer.gate = gate()
    return layer, user


# --------------------------------------------------------------------------- the gate alone


def test_each_source_gets_its_burst_then_its_rate() -> None:
    flood = gate(rate=10, burst=5, total_rate=0)
    assert [flood.admit("a", "INVITE", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert flood.admit("b", "INVITE", 0.0)  # another source has its own bucket
    assert not flood.admit("a", "OPTIONS", 0.05)  # half a token
    assert flood.admit("a", "INVITE", 0.1)  # one token after 1/rate
    assert not flood.admit("a", "REGISTER", 0.1)
    assert flood.admit("a", "INVITE", 10.0)  # refilled, up to the burst
    assert flood.stats["admitted"] == 8 and flood.stats["dropped"] == 4
    assert flood.dropped_by_method == {"INVITE": 2, "OPTIONS": 1, "REGISTER": 1}


def test_all_sources_together_are_bounded_too() -> None:
    flood = gate(rate=100, burst=100, total_rate=10, total_burst=20)
    admitted = sum(flood.admit(f"10.0.0.{n}", "INVITE", 0.0) for n in range(50))
    assert admitted == 20
    admitted = sum(flood.admit(f"10.0.1.{n}", "INVITE", 1.0) for n in range(50))
    assert admitted == 10  # one second of the overall rate


def test_memory_is_bounded_and_the_longest_unseen_source_goes_first() -> None:
    flood = gate(rate=1, burst=1, total_rate=0, max_sources=3)
    for host in ("a", "b", "c"):
        assert flood.admit(host, "INVITE", 0.0)
    assert not flood.admit("a", "INVITE", 0.0)  # "a" seen again: now the most recent
    assert flood.admit("d", "INVITE", 0.0)  # "b" forgotten
    assert flood.sources == 3
    assert not flood.admit("a", "INVITE", 0.0)  # "a" kept its empty bucket
    assert flood.admit("b", "INVITE", 0.0)  # "b" starts again


# --------------------------------------------------------------------------- in the layer


def test_an_answer_bigger_than_what_a_udp_stranger_sent_waits_for_its_retransmission() -> None:
    """A single forged packet gets nothing bigger back; a real sender retransmits (T1 later)
    and its second copy pays for the answer: bytes out never exceed bytes in."""
    layer, user = challenger("SHA-256", "MD5")
    data = invite()
    layer.receive(data, STRANGER, 0.0)
    assert user.kinds() == ["request"]  # the user saw it and answered 407
    assert sent(layer) == []  # neither the 100 Trying nor the 407 left
    assert layer.gate is not None and layer.gate.stats["oversize"] == 1
    layer.receive(data, STRANGER, 0.5)  # the retransmission
    out = layer.drain()
    assert [d[:11] for d, _ in out] == [b"SIP/2.0 407"]
    assert sum(len(d) for d, _ in out) <= 2 * len(data)
    assert b"algorithm=MD5" in out[0][0]  # two copies paid for both offers
    layer.handle_timer(1.0)  # Timer G: nothing left to pay for a retransmission of ours
    assert layer.drain() == []


def test_a_challenge_loses_its_later_offers_to_fit_and_comes_alone() -> None:
    layer, _user = challenger("SHA-256", "MD5")
    data = invite(extra="Subject: " + "x" * 150)  # room for one offer, not two
    layer.receive(data, STRANGER, 0.0)
    out = layer.drain()
    assert len(out) == 1  # the 407 only: no 100 Trying before it
    response_data, dest = out[0]
    assert dest == STRANGER and len(response_data) <= len(data)
    assert response_data.startswith(b"SIP/2.0 407")
    assert b"algorithm=SHA-256" in response_data and b"algorithm=MD5" not in response_data
    assert layer.gate is not None and layer.gate.stats["trimmed"] == 1


def test_a_big_enough_request_gets_its_whole_challenge() -> None:
    layer, _user = challenger("SHA-256", "MD5")
    data = invite(body=b"v=0\r\n" + b"a=x\r\n" * 100)
    layer.receive(data, STRANGER, 0.0)
    [(response_data, _)] = layer.drain()
    assert b"algorithm=MD5" in response_data and len(response_data) <= len(data)


def test_over_tcp_the_address_is_proved_and_nothing_is_metered() -> None:
    layer, _user = challenger("SHA-256", "MD5")
    layer.receive(invite(source=STRANGER_TCP), STRANGER_TCP, 0.0)
    statuses = [m.status for m, _ in sent(layer) if isinstance(m, Response)]
    assert statuses == [100, 407]


def test_a_known_trunk_is_neither_rated_nor_metered() -> None:
    layer, _user = challenger("SHA-256", "MD5")
    for n in range(300):
        layer.receive(invite(n, source=TRUNK), TRUNK, 0.0)
    statuses = [m.status for m, _ in sent(layer) if isinstance(m, Response)]
    assert statuses == [100, 407] * 300
    assert layer.gate is not None and layer.gate.stats == {
        "admitted": 0,
        "dropped": 0,
        "oversize": 0,
        "trimmed": 0,
    }


def test_requests_over_a_stranger_s_rate_are_dropped_before_any_transaction() -> None:
    layer, user = challenger("MD5")
    big = b"a=x\r\n" * 100
    for n in range(150):
        layer.receive(invite(n, body=big), STRANGER, 0.0)
    assert len(user.events) == 100  # the burst; the rest never reached the user
    assert len(layer.server) == 100
    assert layer.gate is not None and layer.gate.dropped_by_method == {"INVITE": 50}
    assert len(layer.drain()) == 100  # one 407 each, nothing else


def test_in_dialog_requests_are_not_gated() -> None:
    user = Recorder()
    layer = TransactionLayer(user, {"udp": ("192.0.2.2", 5060)})
    layer.gate = gate(rate=1, burst=1, total_rate=0)
    for n in range(5):
        bye = (
            f"BYE sip:x@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-b{n}\r\n"
            f"From: <sip:a@x>;tag=a\r\nTo: <sip:b@y>;tag=b\r\nCall-ID: c\r\n"
            f"CSeq: {n + 2} BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        layer.receive(bye, STRANGER, 0.0)
    assert len(user.events) == 5


def test_the_user_lifts_the_meter_once_it_knows_the_caller() -> None:
    """A caller whose password checked: the 100 Trying and every later answer go out,
    however big."""

    def accept(tx: ServerTransaction, request: Request, now: float) -> None:
        tx.metered = False
        accepted.append(tx)

    accepted: list[ServerTransaction] = []
    user = Recorder(on_request_do=accept)
    layer = TransactionLayer(user, {"udp": ("192.0.2.2", 5060)})
    layer.gate = gate()
    layer.receive(invite(), STRANGER, 0.0)
    [tx] = accepted
    ringing = make_response(tx.request, 180, None, "t")
    ringing.headers.add("Subject", "y" * 1000)
    layer.respond(tx, ringing, 0.1)
    statuses = [m.status for m, _ in sent(layer) if isinstance(m, Response)]
    assert statuses == [100, 180]


def test_a_malformed_request_from_a_stranger_is_rated_and_never_answered_bigger() -> None:
    layer = TransactionLayer(Recorder(), {"udp": ("192.0.2.2", 5060)})
    layer.gate = gate(rate=1, burst=2, total_rate=0)
    tiny = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\r\n"
    for _ in range(4):
        layer.receive(tiny, STRANGER, 0.0)
    out = layer.drain()
    assert len(out) == 1  # the second copy paid for the 400 the first could not
    assert sum(len(data) for data, _ in out) <= 4 * len(tiny)
    assert layer.gate is not None
    assert layer.gate.stats["dropped"] == 2
