"""Tests for smartswitch.sip.digest: RFC 7616 / RFC 2617 vectors, parser, server, client."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from smartswitch.sip.digest import (
    AuthResult,
    DigestAuthenticator,
    DigestError,
    DigestParseError,
    build_authorization,
    compute_ha1,
    compute_response,
    parse_auth_params,
    select_challenge,
)

# RFC 7616 §3.9.1, exactly as printed (header values after the colon, with line folding).
RFC7616_CHALLENGE_SHA256 = (
    "Digest\r\n"
    '       realm="http-auth@example.org",\r\n'
    '       qop="auth, auth-int",\r\n'
    "       algorithm=SHA-256,\r\n"
    '       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    '       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CHALLENGE_MD5 = RFC7616_CHALLENGE_SHA256.replace("SHA-256", "MD5")
RFC7616_USER = "Mufasa"
RFC7616_PASSWORD = "Circle of Life"
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_URI = "/dir/index.html"
RFC7616_RESPONSE = {
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
}

REALM = "sip.example.net"
SECRET = b"0123456789abcdef-cluster-secret"
T0 = 1_700_000_000.0
URI = "sip:sip.example.net"

USERS = {"alice": "wonderland", "bob": "builder"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(username, realm, password, algorithm)


def make_auth(**kwargs: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def answer(
    challenge: str,
    username: str = "alice",
    password: str = "wonderland",
    nc: int = 1,
    method: str = "REGISTER",
    cnonce: str | None = "c0ffee",
) -> str:
    return build_authorization(challenge, method, URI, username, password, nc, cnonce)


def with_param(credentials: str, name: str, value: str | None) -> str:
    """Rebuild a Digest credentials value with one parameter replaced (or dropped if None)."""
    _, params = parse_auth_params(credentials)
    if value is None:
        del params[name]
    else:
        params[name] = value
    return "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())


# --- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_rfc7616_response_vectors(algorithm: str) -> None:
    ha1 = compute_ha1(RFC7616_USER, RFC7616_REALM, RFC7616_PASSWORD, algorithm)
    response = compute_response(
        ha1,
        RFC7616_NONCE,
        "GET",
        RFC7616_URI,
        algorithm,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == RFC7616_RESPONSE[algorithm]


@pytest.mark.parametrize(
    ("challenge", "algorithm"),
    [(RFC7616_CHALLENGE_SHA256, "SHA-256"), (RFC7616_CHALLENGE_MD5, "MD5")],
)
def test_rfc7616_client_answers_printed_challenge(challenge: str, algorithm: str) -> None:
    value = build_authorization(
        challenge, "GET", RFC7616_URI, RFC7616_USER, RFC7616_PASSWORD, 1, RFC7616_CNONCE
    )
    scheme, p = parse_auth_params(value)
    assert scheme == "Digest"
    assert p == {
        "username": RFC7616_USER,
        "realm": RFC7616_REALM,
        "nonce": RFC7616_NONCE,
        "uri": RFC7616_URI,
        "response": RFC7616_RESPONSE[algorithm],
        "cnonce": RFC7616_CNONCE,
        "qop": "auth",
        "nc": "00000001",
        "algorithm": algorithm,
        "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    }


def test_rfc2617_vector_md5_ha1_and_response() -> None:
    # RFC 2617 §3.5 (note "Circle Of Life" with a capital O there).
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert ha1 == "939e7578ed9e3c518a452acee763bce9"
    response = compute_response(
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        "MD5",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "hasher"), [("MD5", hashlib.md5), ("SHA-256", hashlib.sha256)]
)
def test_compute_ha1_both_algorithms(algorithm: str, hasher: Callable[[bytes], Any]) -> None:
    ha1 = compute_ha1("alice", REALM, "wonderland", algorithm)
    assert ha1 == hasher(b"alice:sip.example.net:wonderland").hexdigest()
    assert ha1 == compute_ha1("alice", REALM, "wonderland", algorithm.lower())
    assert len(ha1) == {"MD5": 32, "SHA-256": 64}[algorithm]
    assert ha1 == ha1.lower()


def test_compute_ha1_is_utf8() -> None:
    ha1 = compute_ha1("jäger", REALM, "pässwörd", "SHA-256")
    assert ha1 == hashlib.sha256("jäger:sip.example.net:pässwörd".encode()).hexdigest()


def test_compute_ha1_refuses_unsupported_algorithm() -> None:
    with pytest.raises(DigestError):
        compute_ha1("a", "b", "c", "MD5-sess")


def test_compute_response_legacy_without_qop() -> None:
    # RFC 2617 §3.2.2.1, RFC 2069 compatibility: H(HA1:nonce:H(method:uri)).
    ha1 = compute_ha1("alice", REALM, "wonderland", "MD5")
    ha2 = hashlib.md5(b"INVITE:sip:bob@example.net").hexdigest()
    expected = hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()
    assert compute_response(ha1, "abc", "INVITE", "sip:bob@example.net", "MD5") == expected


# --- parser --------------------------------------------------------------------------------


def test_parse_tokens_quoted_escapes_whitespace_and_case() -> None:
    value = (
        '  Digest   Realm = "quoted, with \\"escapes\\" and \\\\ backslash" ,'
        'nc=00000001,\tALGORITHM=SHA-256 ,  opaque="", uri="sip:a@b;transport=tcp"  '
    )
    scheme, params = parse_auth_params(value)
    assert scheme == "Digest"
    assert params == {
        "realm": 'quoted, with "escapes" and \\ backslash',
        "nc": "00000001",
        "algorithm": "SHA-256",
        "opaque": "",
        "uri": "sip:a@b;transport=tcp",
    }


def test_parse_line_folding_and_empty_elements() -> None:
    scheme, params = parse_auth_params(RFC7616_CHALLENGE_SHA256)
    assert scheme == "Digest"
    assert params["qop"] == "auth, auth-int"
    assert params["nonce"] == RFC7616_NONCE
    _, params = parse_auth_params('Digest a=1,, b="2",')
    assert params == {"a": "1", "b": "2"}


def test_parse_scheme_only_and_utf8() -> None:
    assert parse_auth_params("Digest") == ("Digest", {})
    assert parse_auth_params('digest username="jäger"') == ("digest", {"username": "jäger"})


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Digest,",
        "Digest realm",
        "Digest realm=",
        'Digest realm="unterminated',
        'Digest realm="a" nonce="b"',  # missing comma
        "Digest realm=a b",
        'Digest realm="a", realm="b"',  # duplicate
        'Digest realm="a", REALM="b"',  # duplicate, differently cased
        "Digest uri=sip:a@b",  # ':' and '@' are not token characters
        'Digest realm="a\rb"',
        'Digest realm="a"\r\nVia: injected',
        'Digest realm="a\x00b"',
        'Digest realm="trailing\\',
        "Basic dXNlcjpwYXNz==",  # token68 is not Digest
        '"Digest" realm="a"',
        "Digest =a",
    ],
)
def test_parse_garbage_raises_typed_error(value: str) -> None:
    with pytest.raises(DigestParseError):
        parse_auth_params(value)
    assert issubclass(DigestParseError, ValueError)


# --- server: challenge ---------------------------------------------------------------------


def test_challenge_one_value_per_algorithm_preferred_first() -> None:
    values = make_auth().challenge(T0)
    assert len(values) == 2
    parsed = [parse_auth_params(v) for v in values]
    assert [p["algorithm"] for _, p in parsed] == ["SHA-256", "MD5"]
    for scheme, p in parsed:
        assert scheme == "Digest"
        assert p["realm"] == REALM
        assert p["qop"] == "auth"
        assert "stale" not in p
        assert "opaque" not in p
    assert values[0].startswith('Digest realm="sip.example.net", nonce="')


def test_challenge_stale_opaque_and_fresh_nonces() -> None:
    auth = make_auth(opaque="op/aque", algorithms=("MD5",))
    (first,) = auth.challenge(T0, stale=True)
    (second,) = auth.challenge(T0)
    _, p1 = parse_auth_params(first)
    _, p2 = parse_auth_params(second)
    assert p1["stale"] == "true"
    assert p1["opaque"] == "op/aque"
    assert p1["nonce"] != p2["nonce"]  # random part differs even at the same instant


def test_realm_with_quotes_is_escaped() -> None:
    auth = DigestAuthenticator('odd "realm" \\ here', SECRET)
    _, params = parse_auth_params(auth.challenge(T0)[0])
    assert params["realm"] == 'odd "realm" \\ here'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"nonce_ttl": 0.0},
        {"nonce_ttl": float("nan")},
        {"max_tracked_nonces": 0},
        {"algorithms": ()},
        {"algorithms": ("SHA-256", "sha-256")},
        {"algorithms": ("SHA-512-256",)},
        {"realm": "evil\r\nVia: x"},
    ],
)
def test_constructor_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"realm": REALM, "secret": SECRET}
    args.update(kwargs)
    with pytest.raises(ValueError):
        DigestAuthenticator(**args)  # type: ignore[arg-type]


# --- server: verify ------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_round_trip_client_to_server(index: int) -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[index]
    result = auth.verify("REGISTER", answer(challenge), lookup, T0 + 1)
    assert result == AuthResult(
        ok=True,
        username="alice",
        stale=False,
        reason="ok",
        uri=URI,
        algorithm=("SHA-256", "MD5")[index],
    )


def test_round_trip_with_opaque_and_random_cnonce() -> None:
    auth = make_auth(opaque="xyz")
    challenge = auth.challenge(T0)[0]
    assert auth.verify("INVITE", answer(challenge, method="INVITE", cnonce=None), lookup, T0).ok
    tampered = with_param(answer(challenge, nc=2), "opaque", "abc")
    assert not auth.verify("INVITE", tampered, lookup, T0).ok
    dropped = with_param(answer(challenge, nc=3), "opaque", None)
    assert not auth.verify("INVITE", dropped, lookup, T0).ok


def test_wrong_method_refused() -> None:
    auth = make_auth()
    credentials = answer(auth.challenge(T0)[0], method="REGISTER")
    assert not auth.verify("INVITE", credentials, lookup, T0).ok


def test_wrong_password_refused() -> None:
    auth = make_auth()
    credentials = answer(auth.challenge(T0)[0], password="guess")
    result = auth.verify("REGISTER", credentials, lookup, T0)
    assert result.ok is False
    assert result.stale is False
    assert result.reason == "wrong password"
    assert "guess" not in result.reason


def test_unknown_user_indistinguishable_from_wrong_password() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    calls: list[tuple[str, str, str]] = []

    def recording_lookup(username: str, realm: str, algorithm: str) -> str | None:
        calls.append((username, realm, algorithm))
        return lookup(username, realm, algorithm)

    # Same claimed username text in both, so the only difference is whether it exists.
    USERS["mallory"] = "secret"
    try:
        wrong = auth.verify("REGISTER", answer(challenge, "mallory", "guess"), recording_lookup, T0)
    finally:
        del USERS["mallory"]
    unknown = auth.verify("REGISTER", answer(challenge, "mallory", "guess"), recording_lookup, T0)
    assert calls == [("mallory", REALM, "SHA-256")] * 2
    assert wrong.reason != unknown.reason  # logs may tell them apart ...
    # ... the caller's response logic may not.
    assert dataclasses.replace(wrong, reason="") == dataclasses.replace(unknown, reason="")
    assert unknown.ok is False and unknown.stale is False


def test_unknown_user_also_not_stale_on_expired_nonce() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    later = T0 + 301
    unknown = auth.verify("REGISTER", answer(challenge, "nobody", "x"), lookup, later)
    wrong = auth.verify("REGISTER", answer(challenge, "alice", "x"), lookup, later)
    assert unknown.stale is False and wrong.stale is False
    assert unknown.ok is False and wrong.ok is False


def test_malformed_stored_ha1_refused() -> None:
    auth = make_auth()
    credentials = answer(auth.challenge(T0)[0])
    result = auth.verify("REGISTER", credentials, lambda u, r, a: "not-hex", T0)
    assert result.ok is False and result.stale is False
    # An MD5 HA1 offered for a SHA-256 login is also unusable.
    md5_ha1 = compute_ha1("alice", REALM, "wonderland", "MD5")
    assert not auth.verify("REGISTER", credentials, lambda u, r, a: md5_ha1, T0).ok


def test_uppercase_stored_ha1_and_response_accepted() -> None:
    auth = make_auth()
    credentials = answer(auth.challenge(T0)[0])
    _, p = parse_auth_params(credentials)
    upper = with_param(credentials, "response", p["response"].upper())
    result = auth.verify("REGISTER", upper, lambda u, r, a: lookup(u, r, a).upper(), T0)  # type: ignore[union-attr]
    assert result.ok


def test_expired_nonce_is_stale_only_with_valid_digest() -> None:
    auth = make_auth(nonce_ttl=60.0)
    challenge = auth.challenge(T0)[0]
    assert auth.verify("REGISTER", answer(challenge), lookup, T0 + 60).ok  # still fresh
    expired = auth.verify("REGISTER", answer(challenge, nc=2), lookup, T0 + 61)
    assert expired.ok is False
    assert expired.stale is True
    assert expired.username == "alice"
    wrong = auth.verify("REGISTER", answer(challenge, password="x", nc=3), lookup, T0 + 61)
    assert wrong.stale is False
    # The client retries with the new (stale=true) challenge and gets in.
    retry = auth.challenge(T0 + 61, stale=True)[0]
    assert auth.verify("REGISTER", answer(retry), lookup, T0 + 62).ok


def test_nonce_from_the_future_beyond_ttl_is_stale() -> None:
    # Across a cluster wall clocks may differ a little; far ahead counts as expired.
    auth = make_auth(nonce_ttl=60.0)
    challenge = auth.challenge(T0 + 30)[0]
    assert auth.verify("REGISTER", answer(challenge), lookup, T0).ok
    far = auth.challenge(T0 + 600)[0]
    assert auth.verify("REGISTER", answer(far), lookup, T0).stale


def test_nonce_verifies_on_another_node_sharing_the_secret() -> None:
    challenge = make_auth().challenge(T0)[0]
    other_node = make_auth()
    assert other_node.verify("REGISTER", answer(challenge), lookup, T0 + 5).ok


def _respell_nonce(nonce: str, raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("how", ["other-secret", "flipped-byte", "random", "short", "respelled"])
def test_forged_nonce_refused(how: str) -> None:
    auth = make_auth()
    nonce = parse_auth_params(auth.challenge(T0)[0])[1]["nonce"]
    if how == "other-secret":
        nonce = DigestAuthenticator(REALM, b"another-secret-of-16+").make_nonce(T0)
    elif how == "flipped-byte":
        raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
        raw[3] ^= 0x01  # move the issue time: the MAC must catch it
        nonce = _respell_nonce(nonce, bytes(raw))
    elif how == "random":
        nonce = _respell_nonce(nonce, bytes(56))
    elif how == "short":
        nonce = nonce[:-4]
    else:
        # Same bytes, different text: the last base64 char holds 4 ignored bits. Accepting it
        # would give an attacker a fresh replay counter for a captured request.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(nonce[-1])
        respelled = nonce[:-1] + alphabet[last ^ 0x1]
        assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(nonce + "=")
        nonce = respelled
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
    result = auth.verify("REGISTER", answer(challenge), lookup, T0)
    assert result.ok is False
    assert result.stale is False
    assert result.reason == "nonce not issued by this realm's secret"


def test_respelled_nonce_cannot_replay() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    nonce = parse_auth_params(challenge)[1]["nonce"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = nonce[:-1] + alphabet[alphabet.index(nonce[-1]) ^ 0x2]
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(nonce + "=")
    assert auth.verify("REGISTER", answer(challenge), lookup, T0).ok
    replay = answer(challenge.replace(nonce, respelled))
    assert not auth.verify("REGISTER", replay, lookup, T0).ok


def test_nonce_from_other_realm_refused() -> None:
    other = DigestAuthenticator("other.example.net", SECRET)
    nonce = other.make_nonce(T0)
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
    assert not make_auth().verify("REGISTER", answer(challenge), lookup, T0).ok


def test_replayed_nc_refused_and_increasing_nc_accepted() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    first = answer(challenge, nc=1)
    assert auth.verify("REGISTER", first, lookup, T0).ok
    replay = auth.verify("REGISTER", first, lookup, T0 + 1)  # the very same request again
    assert replay.ok is False
    assert replay.stale is True  # a genuine client recovers with a fresh nonce
    assert replay.reason == "nonce count replayed"
    assert not auth.verify("REGISTER", answer(challenge, nc=1, cnonce="new"), lookup, T0).ok
    assert auth.verify("REGISTER", answer(challenge, nc=2), lookup, T0 + 2).ok
    assert auth.verify("REGISTER", answer(challenge, nc=5), lookup, T0 + 3).ok  # gaps allowed
    assert not auth.verify("REGISTER", answer(challenge, nc=4), lookup, T0 + 4).ok
    assert not auth.verify("REGISTER", answer(challenge, nc=5), lookup, T0 + 4).ok
    assert auth.verify("REGISTER", answer(challenge, nc=6), lookup, T0 + 5).ok
    assert auth.tracked_nonces == 1


def test_failed_attempt_does_not_burn_nonce_count() -> None:
    # Someone who saw the nonce sends nc=ffffffff with a bad response: the genuine client
    # must still be able to use nc=1.
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    bogus = answer(challenge, password="guess", nc=0xFFFFFFFF)
    assert not auth.verify("REGISTER", bogus, lookup, T0).ok
    assert auth.tracked_nonces == 0
    assert auth.verify("REGISTER", answer(challenge, nc=1), lookup, T0).ok


def test_qop_missing_refused() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[1]  # MD5
    legacy = challenge.replace(', qop="auth"', "")
    credentials = answer(legacy)  # RFC 2069 form: no qop, nc, cnonce
    _, p = parse_auth_params(credentials)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    result = auth.verify("REGISTER", credentials, lookup, T0)
    assert result.ok is False
    assert result.stale is False
    assert result.reason.startswith("qop missing")


@pytest.mark.parametrize(
    ("name", "value", "reason_start"),
    [
        ("qop", "auth-int", "qop 'auth-int' not supported"),
        ("nc", "1", "nc missing"),
        ("nc", "0000000g", "nc missing"),
        ("nc", None, "nc missing"),
        ("cnonce", None, "cnonce missing"),
        ("cnonce", "", "cnonce missing"),
        ("realm", "other.example.net", "realm mismatch"),
        ("realm", None, "missing realm"),
        ("uri", None, "missing uri"),
        ("nonce", None, "missing nonce"),
        ("response", None, "missing response"),
        ("response", "abc", "response is not"),
        ("username", None, "missing username"),
        ("algorithm", "SHA-512-256", "algorithm not offered"),
        ("algorithm", "MD5-sess", "algorithm not offered"),
        ("userhash", "true", "userhash"),
    ],
)
def test_unacceptable_credentials_refused(name: str, value: str | None, reason_start: str) -> None:
    auth = make_auth()
    credentials = answer(auth.challenge(T0)[0])
    if value is None or name in parse_auth_params(credentials)[1]:
        credentials = with_param(credentials, name, value)
    else:
        credentials += f", {name}={value}"
    result = auth.verify("REGISTER", credentials, lookup, T0)
    assert result.ok is False
    assert result.stale is False
    assert result.reason.startswith(reason_start), result.reason
    assert auth.tracked_nonces == 0


def test_algorithm_not_offered_and_default_md5() -> None:
    sha_only = make_auth(algorithms=("SHA-256",))
    nonce = sha_only.make_nonce(T0)
    md5_challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth"'
    assert sha_only.verify("REGISTER", answer(md5_challenge), lookup, T0).reason == (
        "algorithm not offered"
    )
    # No algorithm parameter means MD5 (RFC 7616 §3.3), and lower-case tokens are accepted.
    both = make_auth()
    no_alg = md5_challenge.replace(", algorithm=MD5", "")
    credentials = answer(no_alg)
    assert "algorithm" not in parse_auth_params(credentials)[1]
    result = both.verify("REGISTER", credentials, lookup, T0)
    assert result.ok and result.algorithm == "MD5"
    lower = answer(md5_challenge.replace("algorithm=MD5", "algorithm=md5"), nc=2)
    assert both.verify("REGISTER", lower, lookup, T0).ok


@pytest.mark.parametrize(
    "value", ["", "Basic dXNlcjpwYXNz", 'Digest username="a", username="b"', "garbage, ="]
)
def test_malformed_header_value_gives_result_not_exception(value: str) -> None:
    result = make_auth().verify("REGISTER", value, lookup, T0)
    assert result.ok is False and result.stale is False


def test_reason_never_contains_secrets() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    credentials = answer(challenge, password="wonderland")
    response = parse_auth_params(credentials)[1]["response"]
    ha1 = lookup("alice", REALM, "SHA-256")
    assert ha1 is not None
    results = [
        auth.verify("REGISTER", credentials, lookup, T0),
        auth.verify("REGISTER", credentials, lookup, T0),  # replay
        auth.verify("REGISTER", credentials + ', response="x"', lookup, T0),  # parse error
        auth.verify("REGISTER", answer(challenge, password="guess", nc=9), lookup, T0),
    ]
    for result in results:
        for secret in ("wonderland", response, ha1, SECRET.decode()):
            assert secret not in result.reason


def test_replay_table_is_bounded_and_eviction_stays_safe() -> None:
    auth = make_auth(max_tracked_nonces=4, nonce_ttl=1000.0)
    challenges = [auth.challenge(T0 + i)[0] for i in range(10)]
    for i, challenge in enumerate(challenges):
        assert auth.verify("REGISTER", answer(challenge), lookup, T0 + 10 + i).ok
        assert auth.tracked_nonces <= 4
    assert auth.tracked_nonces == 4
    # An evicted nonce is not forgotten into a fresh counter: it is refused as stale ...
    evicted = auth.verify("REGISTER", answer(challenges[0], nc=2), lookup, T0 + 30)
    assert evicted.ok is False and evicted.stale is True
    replayed = auth.verify("REGISTER", answer(challenges[0], nc=1), lookup, T0 + 30)
    assert replayed.ok is False
    # ... while tracked nonces keep counting, and new nonces are accepted.
    assert auth.verify("REGISTER", answer(challenges[9], nc=2), lookup, T0 + 30).ok
    assert auth.verify("REGISTER", answer(auth.challenge(T0 + 31)[0]), lookup, T0 + 32).ok
    assert auth.tracked_nonces == 4


def test_expired_entries_are_dropped_first() -> None:
    auth = make_auth(max_tracked_nonces=1000, nonce_ttl=10.0)
    for i in range(50):
        assert auth.verify("REGISTER", answer(auth.challenge(T0 + i)[0]), lookup, T0 + i).ok
    # Only entries younger than the ttl stay once the front has expired.
    assert auth.tracked_nonces <= 11
    assert auth.verify("REGISTER", answer(auth.challenge(T0 + 100)[0]), lookup, T0 + 100).ok
    assert auth.tracked_nonces == 1


def test_clock_stepping_back_does_not_revive_dropped_nonce() -> None:
    auth = make_auth(nonce_ttl=10.0)
    old = auth.challenge(T0)[0]
    assert auth.verify("REGISTER", answer(old), lookup, T0).ok
    # Much later a new login sweeps the expired entry out of the table ...
    assert auth.verify("REGISTER", answer(auth.challenge(T0 + 50)[0]), lookup, T0 + 50).ok
    assert auth.tracked_nonces == 1
    # ... then the wall clock is set back: the old request must still not replay.
    assert not auth.verify("REGISTER", answer(old), lookup, T0 + 1).ok


# --- client --------------------------------------------------------------------------------


def test_build_authorization_legacy_challenge_without_qop() -> None:
    challenge = 'Digest realm="old.example.com", nonce="abc123", opaque="zz"'
    value = build_authorization(challenge, "REGISTER", "sip:old.example.com", "u", "p", 1)
    _, p = parse_auth_params(value)
    ha1 = compute_ha1("u", "old.example.com", "p", "MD5")
    assert p == {
        "username": "u",
        "realm": "old.example.com",
        "nonce": "abc123",
        "uri": "sip:old.example.com",
        "response": compute_response(ha1, "abc123", "REGISTER", "sip:old.example.com", "MD5"),
        "opaque": "zz",
    }


def test_build_authorization_formats_nc_and_escapes() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth-int,auth", algorithm=sha-256'
    value = build_authorization(challenge, "INVITE", "sip:x", 'we"ird\\user', "p", 255, "cn")
    assert "nc=000000ff" in value
    assert "qop=auth," in value
    assert "algorithm=sha-256" in value  # echoed as the server spelled it
    _, p = parse_auth_params(value)
    assert p["username"] == 'we"ird\\user'
    ha1 = compute_ha1('we"ird\\user', "r", "p", "SHA-256")
    expected = compute_response(
        ha1, "n", "INVITE", "sip:x", "SHA-256", qop="auth", nc="000000ff", cnonce="cn"
    )
    assert p["response"] == expected


def test_build_authorization_random_cnonce() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth"'
    a = parse_auth_params(build_authorization(challenge, "REGISTER", "sip:x", "u", "p", 1))[1]
    b = parse_auth_params(build_authorization(challenge, "REGISTER", "sip:x", "u", "p", 1))[1]
    assert a["cnonce"] and a["cnonce"] != b["cnonce"]


@pytest.mark.parametrize(
    ("challenge", "nc", "error"),
    [
        ('Basic realm="r"', 1, DigestError),
        ('Digest nonce="n"', 1, DigestError),
        ('Digest realm="r", nonce="n", algorithm=MD5-sess', 1, DigestError),
        ('Digest realm="r", nonce="n", qop="auth-int"', 1, DigestError),
        ('Digest realm="r", nonce="n", qop="auth"', 0, ValueError),
        ('Digest realm="r", nonce="n", qop="auth"', 2**32, ValueError),
        ("Digest realm=", 1, DigestParseError),
    ],
)
def test_build_authorization_refuses(challenge: str, nc: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        build_authorization(challenge, "REGISTER", "sip:x", "u", "p", nc)


def test_build_authorization_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        build_authorization('Digest realm="r", nonce="n"', "REGISTER", "sip:x\r\nX: y", "u", "p", 1)


def test_select_challenge_topmost_supported() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=SHA-512-256, qop="auth"',
        "Garbage ===",
        'Newauth realm="r", nonce="1"',
        'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth-int"',
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="4", algorithm=MD5, qop="auth"',
    ]
    assert select_challenge(values) == values[4]
    assert select_challenge(values[5:]) == values[5]
    assert select_challenge(values[:4]) is None
    ours = make_auth().challenge(T0)
    assert select_challenge(ours) == ours[0]
