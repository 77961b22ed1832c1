"""The cluster bus: signing and its refusals (sans-IO)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
