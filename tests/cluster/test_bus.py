"""The cluster bus: signing and its refusals (sans-IO), the router and the client (in process,
through httpx's ASGI transport: no sockets). Real servers: test_membership.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from smartswitch.cluster.bus import (
    PATHS,
    BadAnswer,
    BusClient,
    MessageError,
    Peer,
    PeerFailed,
    PeerRefused,
    PeerTimeout,
    PeerUnreachable,
)
from smartswitch.cluster.endpoints import bus_router, cluster_router, metrics_text
from smartswitch.cluster.membership import Membership
from smartswitch.cluster.signing import (
    HEADER_BODY,
    HEADER_FROM,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIME,
    HEADER_TO,
    SIGNED_HEADERS,
    BusAuthError,
    NonceCache,
    Refusal,
    SignedRequest,
    Signer,
    Verifier,
    canonical_request,
    derive_key,
    hkdf_sha256,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "cluster"
SECRET = "test-cluster-secret-0123456789"
KEY = derive_key(SECRET)
NOW = 1_700_000_000.0
PATH = "/cluster/heartbeat"
BODY = b'{"v":1,"node":"node1","calls":3}'


def signed(
    body: bytes = BODY, now: float = NOW, method: str = "POST", path: str = PATH
) -> dict[str, str]:
    return Signer("node1", KEY).sign(method, path, body, "node2", now)


def refused(verifier: Verifier, headers: dict[str, str], **overrides: Any) -> Refusal:
    request = {"method": "POST", "target": PATH, "body": BODY, "now": NOW, **overrides}
    with pytest.raises(BusAuthError) as caught:
        verifier.verify(
            request["method"], request["target"], headers, request["body"], request["now"]
        )
    assert caught.value.status == 401
    return caught.value.reason


# --- the key and the wire format ---------------------------------------------------------


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_the_bus_key_is_derived_with_a_label_never_the_secret_itself() -> None:
    assert len(KEY) == 32
    assert SECRET.encode() not in KEY
    assert derive_key(SECRET, "another use") != KEY
    assert derive_key(SECRET + "x") != KEY
    with pytest.raises(ValueError, match="empty"):
        derive_key("")


def test_wire_vector_request_and_answer() -> None:
    vector = json.loads((VECTORS / "bus_request.json").read_text())
    key = derive_key(vector["cluster_secret"], vector["hkdf"]["info"])
    assert key.hex() == vector["hkdf"]["key_hex"]
    request = vector["request"]
    body = request["body"].encode()
    headers = Signer(request["from"], key).sign(
        request["method"], request["target"], body, request["to"], request["now"], request["nonce"]
    )
    assert headers == request["headers"]
    digest = headers[HEADER_BODY]
    canonical = canonical_request(
        request["method"],
        request["target"],
        digest,
        int(request["now"]),
        request["nonce"],
        request["from"],
        request["to"],
    )
    assert canonical.decode() == request["canonical"]
    verifier = Verifier(request["to"], key)
    accepted = verifier.verify(request["method"], request["target"], headers, body, request["now"])
    answer = vector["response"]
    assert verifier.sign_response(accepted, 200, answer["body"].encode()) == answer["headers"]


# --- signing and verifying ------------------------------------------------------------------


def test_round_trip() -> None:
    verifier = Verifier("node2", KEY)
    request = verifier.verify("POST", PATH, signed(), BODY, NOW + 1)
    assert (request.sender, request.method, request.target) == ("node1", "POST", PATH)
    assert request.json() == {"v": 1, "node": "node1", "calls": 3}
    assert verifier.accepted == 1
    assert sum(verifier.refused.values()) == 0
    assert len(verifier.nonces) == 1


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in signed().items()}
    assert Verifier("node2", KEY).verify("POST", PATH, headers, BODY, NOW).sender == "node1"


def test_a_query_string_is_signed_with_the_path() -> None:
    verifier = Verifier("node2", KEY)
    headers = signed(b"", method="GET", path="/cluster/status?full=1")
    assert verifier.verify("GET", "/cluster/status?full=1", headers, b"", NOW).sender == "node1"
    headers = signed(b"", method="GET", path="/cluster/status?full=1")
    assert refused(verifier, headers, method="GET", target="/cluster/status?full=0", body=b"") == (
        Refusal.FORGED
    )


def _flip(hex_text: str) -> str:
    return ("0" if hex_text[0] != "0" else "1") + hex_text[1:]


@pytest.mark.parametrize(
    ("case", "change", "reason"),
    [
        (
            "forged signature",
            lambda h: {**h, HEADER_SIGNATURE: _flip(h[HEADER_SIGNATURE])},
            "forged",
        ),
        (
            "another key",
            lambda h: Signer("node1", derive_key("other")).sign("POST", PATH, BODY, "node2", NOW),
            "forged",
        ),
        ("altered time", lambda h: {**h, HEADER_TIME: str(int(NOW) - 1)}, "forged"),
        ("altered sender", lambda h: {**h, HEADER_FROM: "node3"}, "forged"),
        ("altered nonce", lambda h: {**h, HEADER_NONCE: _flip(h[HEADER_NONCE])}, "forged"),
        ("altered digest", lambda h: {**h, HEADER_BODY: _flip(h[HEADER_BODY])}, "forged"),
        ("to another node", lambda h: {**h, HEADER_TO: "node3"}, "misdirected"),
        ("31 s old", lambda h: signed(now=NOW - 31), "stale"),
        ("31 s ahead", lambda h: signed(now=NOW + 31), "stale"),
        ("nonce not hex", lambda h: {**h, HEADER_NONCE: "x" * 32}, "malformed"),
        ("time not a number", lambda h: {**h, HEADER_TIME: "soon"}, "malformed"),
        ("name with a line feed", lambda h: {**h, HEADER_FROM: "node1\nnode2"}, "malformed"),
    ],
)
def test_a_request_is_refused_for_its_reason_and_counted(
    case: str, change: Callable[[dict[str, str]], dict[str, str]], reason: str
) -> None:
    verifier = Verifier("node2", KEY)
    assert refused(verifier, change(signed())) == Refusal(reason), case
    assert verifier.refused == {Refusal(reason): 1}
    assert verifier.accepted == 0
    assert len(verifier.nonces) == 0  # only valid requests are remembered


def test_thirty_seconds_either_way_is_still_fresh() -> None:
    for skew in (-30, 30):
        verifier = Verifier("node2", KEY)
        verifier.verify("POST", PATH, signed(now=NOW + skew), BODY, NOW)


def test_an_altered_body_is_refused() -> None:
    verifier = Verifier("node2", KEY)
    assert refused(verifier, signed(), body=BODY.replace(b"3", b"4")) == Refusal.ALTERED
    assert verifier.refused == {Refusal.ALTERED: 1}


def test_an_altered_path_or_method_is_refused() -> None:
    verifier = Verifier("node2", KEY)
    assert refused(verifier, signed(), target="/cluster/registrations") == Refusal.FORGED
    assert refused(verifier, signed(), method="PUT") == Refusal.FORGED
    assert verifier.refused == {Refusal.FORGED: 2}


def test_a_replayed_request_is_refused() -> None:
    verifier = Verifier("node2", KEY)
    headers = signed()
    verifier.verify("POST", PATH, headers, BODY, NOW)
    assert refused(verifier, headers, now=NOW + 20) == Refusal.REPLAYED
    assert refused(verifier, headers, now=NOW + 31) == Refusal.STALE  # later: too old anyway
    assert verifier.refused == {Refusal.REPLAYED: 1, Refusal.STALE: 1}
    assert verifier.accepted == 1


def test_a_replay_racing_the_original_is_caught_when_the_nonce_is_taken() -> None:
    verifier = Verifier("node2", KEY)
    headers = signed()
    first = verifier.check_headers("POST", PATH, headers, NOW)
    second = verifier.check_headers("POST", PATH, headers, NOW)  # both read their bodies
    verifier.check_body(first, BODY, NOW)
    with pytest.raises(BusAuthError) as caught:
        verifier.check_body(second, BODY, NOW)
    assert caught.value.reason is Refusal.REPLAYED


@pytest.mark.parametrize("missing", SIGNED_HEADERS)
def test_a_missing_header_is_refused(missing: str) -> None:
    verifier = Verifier("node2", KEY)
    headers = {k: v for k, v in signed().items() if k != missing}
    assert refused(verifier, headers) == Refusal.MISSING
    assert verifier.refused == {Refusal.MISSING: 1}


def test_a_sender_not_among_the_members_is_refused() -> None:
    verifier = Verifier("node2", KEY, members=lambda: {"node2", "node3"})
    assert refused(verifier, signed()) == Refusal.UNKNOWN_NODE
    verifier = Verifier("node2", KEY, members=lambda: {"node1", "node2"})
    verifier.verify("POST", PATH, signed(), BODY, NOW)


def test_a_signer_refuses_names_and_paths_that_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        Signer("nœud", KEY)
    with pytest.raises(ValueError, match="printable ASCII"):
        Signer("node1", KEY).sign("GET", "cluster/status", b"", "node2", NOW)


# --- the nonce cache --------------------------------------------------------------------------


def test_nonces_expire_after_twice_the_window() -> None:
    verifier = Verifier("node2", KEY)
    verifier.verify("POST", PATH, signed(), BODY, NOW)
    verifier.nonces.expire(NOW + 60)
    assert len(verifier.nonces) == 1
    verifier.verify("POST", PATH, signed(now=NOW + 61), BODY, NOW + 61)  # expires the first
    assert len(verifier.nonces) == 1


def test_a_flood_of_junk_does_not_grow_the_cache() -> None:
    verifier = Verifier("node2", KEY)
    forger = Signer("node1", derive_key("guessed"))
    for _ in range(2000):
        with pytest.raises(BusAuthError):
            verifier.verify("POST", PATH, forger.sign("POST", PATH, BODY, "node2", NOW), BODY, NOW)
    assert len(verifier.nonces) == 0
    assert verifier.refused == {Refusal.FORGED: 2000}


def test_a_full_cache_forgets_the_oldest_and_refuses_what_it_can_no_longer_check() -> None:
    verifier = Verifier("node2", KEY, nonces=NonceCache(max_entries=3))
    first = signed(now=NOW)
    for i, headers in enumerate([first, *(signed(now=NOW + 1 + i) for i in range(3))]):
        verifier.verify("POST", PATH, headers, BODY, NOW + i)
    assert len(verifier.nonces) == 3  # never more
    assert verifier.nonces.floor == NOW  # the first one's nonce was dropped ...
    assert refused(verifier, first, now=NOW + 4) == Refusal.NONCE_OVERFLOW  # ... not replayable
    assert refused(verifier, signed(now=NOW), now=NOW + 4) == Refusal.NONCE_OVERFLOW
    verifier.verify("POST", PATH, signed(now=NOW + 4), BODY, NOW + 4)  # newer ones pass


def test_the_nonce_cache_stays_bounded_under_load() -> None:
    cache = NonceCache(ttl=60, max_entries=1000)
    for i in range(10_000):
        assert cache.add(f"{i:032x}", int(NOW) + i // 100, NOW + i / 100)
        assert len(cache) <= 1000
    assert len(cache) == 1000


# --- answers ----------------------------------------------------------------------------------


def test_an_answer_is_signed_for_its_request() -> None:
    signer, verifier = Signer("node1", KEY), Verifier("node2", KEY)
    headers = signed()
    request = verifier.verify("POST", PATH, headers, BODY, NOW)
    answer = b'{"ok":true}'
    answer_headers = verifier.sign_response(request, 200, answer)
    signer.check_response(headers, 200, answer_headers, answer)
    for status, body, to in ((200, b'{"ok":false}', headers), (500, answer, headers)):
        with pytest.raises(BusAuthError) as caught:
            signer.check_response(to, status, answer_headers, body)
        assert caught.value.reason is Refusal.FORGED
    other_request = signed()  # the same answer replayed to another request
    with pytest.raises(BusAuthError):
        signer.check_response(other_request, 200, answer_headers, answer)
    with pytest.raises(BusAuthError) as caught:
        signer.check_response(headers, 200, {}, answer)
    assert caught.value.reason is Refusal.MISSING


# --- over HTTP, in process ------------------------------------------------------------------


class Served:
    """A node2 app with the cluster router; handlers record what reached them."""

    def __init__(self, clock: Callable[[], float] = lambda: NOW) -> None:
        self.verifier = Verifier("node2", KEY)
        self.reached: list[SignedRequest] = []
        self.clock = clock

        async def echo(request: SignedRequest) -> Any:
            self.reached.append(request)
            return {"from": request.sender, "got": request.json()}

        async def slow(request: SignedRequest) -> Any:
            await asyncio.sleep(5)

        async def picky(request: SignedRequest) -> Any:
            raise MessageError(422, "no thanks")

        app = FastAPI()
        app.include_router(
            cluster_router(
                self.verifier,
                status=lambda: {"node": "node2", "calls": 7},
                extra={("POST", "/cluster/echo"): echo, ("POST", "/cluster/slow"): slow},
                clock=clock,
            )
        )
        app.include_router(
            bus_router(self.verifier, {("POST", "/cluster/picky"): picky}, clock=clock)
        )
        self.app = app

    def client(self, secret: str = SECRET, clock: Callable[[], float] = lambda: NOW) -> BusClient:
        signer = Signer("node1", derive_key(secret))
        return BusClient(signer, clock=clock, transport=httpx.ASGITransport(app=self.app))


NODE2 = Peer("node2", "node2.test")


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coroutine())


def test_the_client_and_the_router_exchange_signed_json() -> None:
    served = Served()

    async def scenario() -> None:
        async with served.client() as client:
            assert await client.get(NODE2, PATHS.status) == {"node": "node2", "calls": 7}
            answer = await client.post(NODE2, "/cluster/echo", {"a": [1, 2]})
            assert answer == {"from": "node1", "got": {"a": [1, 2]}}
            with pytest.raises(PeerFailed) as failed:
                await client.post(NODE2, PATHS.heartbeat, {})  # no heartbeater here
            assert failed.value.status == 409
            with pytest.raises(PeerFailed) as failed:
                await client.post(NODE2, "/cluster/picky", {})
            assert (failed.value.status, failed.value.detail) == (422, "422 no thanks")

    run(scenario)
    assert served.verifier.accepted == 4


def test_a_refused_request_is_answered_401_with_its_reason() -> None:
    served = Served()

    async def scenario() -> None:
        async with served.client(secret="wrong") as client:
            with pytest.raises(PeerRefused) as caught:
                await client.post(NODE2, "/cluster/echo", {})
            assert caught.value.reason == "forged"
        async with served.client(clock=lambda: NOW - 31) as client:
            with pytest.raises(PeerRefused) as caught:
                await client.post(NODE2, "/cluster/echo", {})
            assert caught.value.reason == "stale"

    run(scenario)
    assert served.reached == []
    assert served.verifier.refused == {Refusal.FORGED: 1, Refusal.STALE: 1}
    text = metrics_text(served.verifier)
    assert 'smartswitch_cluster_bus_requests_refused_total{reason="forged"} 1' in text
    assert 'smartswitch_cluster_bus_requests_refused_total{reason="stale"} 1' in text
    assert 'smartswitch_cluster_bus_requests_refused_total{reason="replayed"} 0' in text


def test_the_body_of_a_refused_request_is_never_read() -> None:
    """Straight ASGI: a request whose headers fail is answered without one receive()."""
    served = Served()
    received: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("body")
        return {"type": "http.request", "body": b"not json at all", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    def scope(headers: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/cluster/echo",
            "raw_path": b"/cluster/echo",
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }

    forged = {**signed(b"not json at all", path="/cluster/echo")}
    forged[HEADER_SIGNATURE] = _flip(forged[HEADER_SIGNATURE])
    asyncio.run(served.app(scope(forged), receive, send))
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"]) == {"detail": "forged"}
    assert received == []
    assert served.reached == []


def test_a_replayed_request_gets_401_over_http() -> None:
    served = Served()
    body = b'{"n":1}'
    headers = {**signed(body, path="/cluster/echo"), "Content-Type": "application/json"}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node2.test") as http:
            first = await http.post("/cluster/echo", content=body, headers=headers)
            again = await http.post("/cluster/echo", content=body, headers=headers)
            altered = await http.post(
                "/cluster/echo", content=b'{"n":2}', headers=signed(body, path="/cluster/echo")
            )
        assert first.status_code == 200
        assert (again.status_code, again.json()) == (401, {"detail": "replayed"})
        assert (altered.status_code, altered.json()) == (401, {"detail": "altered"})

    run(scenario)
    assert len(served.reached) == 1


def test_an_unsigned_or_tampered_answer_is_not_trusted() -> None:
    async def liar(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"bindings": []}'})

    async def scenario() -> None:
        signer = Signer("node1", KEY)
        transport = httpx.ASGITransport(app=liar)
        async with BusClient(signer, clock=lambda: NOW, transport=transport) as client:
            with pytest.raises(BadAnswer, match="not signed"):
                await client.get(NODE2, PATHS.registrations)

    run(scenario)


def test_transport_failures_are_typed() -> None:
    served = Served()

    async def scenario() -> None:
        async with served.client() as client:
            with pytest.raises(PeerTimeout):
                await client.post(NODE2, "/cluster/slow", {}, timeout=0.05)
        async with BusClient(Signer("node1", KEY), connect_timeout=0.5) as client:
            with pytest.raises(PeerUnreachable):
                await client.get(Peer("node2", "127.0.0.1:9"), PATHS.status)  # discard port

    run(scenario)


def test_metrics_list_each_node_up_or_down() -> None:
    membership = Membership(interval=1.0)
    membership.expect(["node1", "node2"])
    text = metrics_text(Verifier("node2", KEY), membership, now=0.0)
    assert 'smartswitch_cluster_node_up{node="node1"} 0' in text
    assert "smartswitch_cluster_bus_nonces 0" in text
