"""REGISTER processing (RFC 3261 10.3) through the sans-IO registrar, with a clock passed in."""

from __future__ import annotations

import hashlib
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartswitch.registrar.guard import GuardSettings
from smartswitch.registrar.registrar import Registrar
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Request, Response, parse_message
from smartswitch.sip.transaction import Address

from .helpers import (
    PHONE,
    REALM,
    T0,
    answer,
    make_registrar,
    register,
    registered,
    subscriber,
)


def _contacts(response: Response) -> dict[str, str]:
    """Contact URI -> its expires parameter, from a 200."""
    out = {}
    for value in response.headers.get_all("contact"):
        match = re.match(r"<([^>]+)>;expires=(\d+)", value)
        assert match, value
        out[match[1]] = match[2]
    return out


def _shape(response: Response) -> list[tuple[str, str]]:
    """The response without what is unique to each request (To tag, Via, Call-ID, CSeq)."""
    lines = [("status", f"{response.status} {response.reason}")]
    for key, _, value in response.headers.items():
        if key in ("via", "call-id", "cseq", "from"):
            continue
        if key == "to":  # the request's own To, with our tag
            value = re.sub(r"sip:\w+@", "sip:USER@", re.sub(r";tag=[^;]+", ";tag=X", value))
        if key == "www-authenticate":
            value = re.sub(r'nonce="[^"]+"', 'nonce="N"', value)
        lines.append((key, value))
    return lines


# --- challenge and authentication ---------------------------------------------------------------


def test_first_register_is_challenged_with_each_algorithm() -> None:
    registrar = make_registrar()
    response = registrar.handle(register(), PHONE, T0)
    assert response.status == 401
    challenges = response.headers.get_lines("www-authenticate")
    assert [re.search(r"algorithm=([\w-]+)", c)[1] for c in challenges] == ["SHA-256", "MD5"]  # type: ignore[index]
    assert all(f'realm="{REALM}"' in c and 'qop="auth"' in c for c in challenges)
    assert registrar.location.lookup("alice", T0) == []


def test_register_with_digest_binds_the_contact_and_the_source() -> None:
    registrar = make_registrar()
    response = registered(registrar)
    assert response.status == 200, response
    assert _contacts(response) == {"sip:alice@192.168.1.10:5060": "600"}
    assert response.headers.get("date")
    [binding] = registrar.location.lookup("alice", T0)
    assert binding.contact == "sip:alice@192.168.1.10:5060"
    assert binding.source == PHONE  # NAT: calls go where the REGISTER came from
    assert binding.expires_at == T0 + 600
    assert binding.user_agent == "test-phone/1.0"
    assert binding.node == "test"


def test_sha256_credentials_are_accepted() -> None:
    registrar = make_registrar()
    first = registrar.handle(register(), PHONE, T0)
    auth = answer(first, algorithm="SHA-256")
    assert "algorithm=SHA-256" in auth
    assert registrar.handle(register(cseq=2, authorization=auth), PHONE, T0).status == 200


def test_ha1_is_what_the_subscriber_keeps() -> None:
    # RFC 7616 3.4.2: HA1 = H(username ":" realm ":" password), per algorithm.
    sub = subscriber("alice", "secret")
    assert sub.ha1_md5 == hashlib.md5(f"alice:{REALM}:secret".encode()).hexdigest()
    assert sub.ha1_sha256 == hashlib.sha256(f"alice:{REALM}:secret".encode()).hexdigest()


def test_unknown_user_and_wrong_password_get_the_same_answer() -> None:
    registrar = make_registrar()
    first = registrar.handle(register(), PHONE, T0)
    wrong = registrar.handle(
        register(cseq=2, authorization=answer(first, "alice", "guess")), PHONE, T0
    )
    first = registrar.handle(register("mallory"), PHONE, T0)
    unknown = registrar.handle(
        register("mallory", cseq=2, authorization=answer(first, "mallory", "guess")), PHONE, T0
    )
    assert wrong.status == unknown.status == 403
    assert _shape(wrong) == _shape(unknown)
    # ... and the challenges before them are alike too.
    assert _shape(registrar.handle(register("alice"), PHONE, T0)) == _shape(
        registrar.handle(register("mallory"), PHONE, T0)
    )


def test_disabled_subscriber_and_foreign_realm_are_unknown_users() -> None:
    registrar = make_registrar(
        subscriber("alice", enabled=False), subscriber("bob", id=2, realm="elsewhere")
    )
    for user in ("alice", "bob"):
        first = registrar.handle(register(user), PHONE, T0)
        response = registrar.handle(
            register(user, cseq=2, authorization=answer(first, user)), PHONE, T0
        )
        assert (response.status, response.reason) == (403, "Forbidden")


def test_expired_nonce_is_refused_with_stale() -> None:
    registrar = make_registrar(nonce_ttl=30)
    first = registrar.handle(register(), PHONE, T0)
    late = registrar.handle(register(cseq=2, authorization=answer(first)), PHONE, T0 + 31)
    assert late.status == 401
    assert all("stale=true" in c for c in late.headers.get_lines("www-authenticate"))
    assert registrar.location.lookup("alice", T0 + 31) == []
    # The stale answer is no failure: the source is not counted against.
    assert registrar.guard.stats["failures"] == 0


def test_replayed_credentials_are_refused() -> None:
    registrar = make_registrar()
    first = registrar.handle(register(), PHONE, T0)
    auth = answer(first)
    assert registrar.handle(register(cseq=2, authorization=auth), PHONE, T0).status == 200
    # The same Authorization again (same nonce and nc), as an eavesdropper would replay it.
    replay = registrar.handle(register(cseq=3, authorization=auth), PHONE, T0 + 1)
    assert replay.status == 401
    assert "stale=true" in replay.headers.get_lines("www-authenticate")[0]
    # The next nc on the same nonce is fine.
    assert (
        registrar.handle(register(cseq=4, authorization=answer(first, nc=2)), PHONE, T0 + 2).status
        == 200
    )


def test_credentials_for_another_uri_are_refused() -> None:
    registrar = make_registrar()
    first = registrar.handle(register(), PHONE, T0)
    auth = answer(first, uri="sip:other.example")
    response = registrar.handle(register(cseq=2, authorization=auth), PHONE, T0)
    assert (response.status, response.reason) == (403, "Forbidden")


def test_a_user_may_only_bind_its_own_aor() -> None:
    registrar = make_registrar(subscriber("alice"), subscriber("bob", id=2))
    first = registrar.handle(register("alice", to_user="bob"), PHONE, T0)
    response = registrar.handle(
        register("alice", to_user="bob", cseq=2, authorization=answer(first)), PHONE, T0
    )
    assert response.status == 403
    assert registrar.location.lookup("bob", T0) == []


def test_allowed_source_networks() -> None:
    registrar = make_registrar(subscriber(allowed=("198.51.100.0/24",)))
    assert registered(registrar).status == 403
    assert registered(registrar, source=Address("udp", "198.51.100.7", 5060)).status == 200


# --- bindings ----------------------------------------------------------------------------------


def test_expires_default_minimum_maximum_and_per_contact() -> None:
    registrar = make_registrar(min_expires=60, max_expires=3600, default_expires=1800)
    response = registered(
        registrar,
        contacts=(
            "<sip:alice@10.0.0.1>;expires=120",
            "<sip:alice@10.0.0.2>",
            "<sip:alice@10.0.0.3>;expires=99999",
        ),
        expires=None,
    )
    assert _contacts(response) == {
        "sip:alice@10.0.0.1": "120",
        "sip:alice@10.0.0.2": "1800",
        "sip:alice@10.0.0.3": "3600",
    }


def test_malformed_expires_means_the_default() -> None:
    # RFC 3261 20.19: malformed values are treated as the default, not refused.
    registrar = make_registrar(default_expires=900)
    response = registered(registrar, expires=None, extra=("Expires: soon",))
    assert _contacts(response) == {"sip:alice@192.168.1.10:5060": "900"}


def test_interval_too_brief_refuses_the_whole_request() -> None:
    registrar = make_registrar(min_expires=60)
    response = registered(
        registrar, contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>;expires=30")
    )
    assert response.status == 423
    assert response.headers.get("min-expires") == "60"
    assert registrar.location.lookup("alice", T0) == []


def test_several_contacts_and_a_query() -> None:
    registrar = make_registrar()
    registered(registrar, contacts=("<sip:alice@10.0.0.1>;q=0.5", "<sip:alice@10.0.0.2>;q=1"))
    bindings = registrar.location.lookup("alice", T0)
    assert [b.contact for b in bindings] == ["sip:alice@10.0.0.2", "sip:alice@10.0.0.1"]
    query = registered(registrar, contacts=(), call_id="other", now=T0 + 100)
    assert _contacts(query) == {"sip:alice@10.0.0.1": "500", "sip:alice@10.0.0.2": "500"}


def test_refresh_moves_the_expiry() -> None:
    registrar = make_registrar()
    registered(registrar)
    response = registered(registrar, now=T0 + 500, cseq=3)
    assert response.status == 200
    [binding] = registrar.location.lookup("alice", T0 + 1000)
    assert binding.expires_at == T0 + 1100
    assert binding.cseq == 4


def test_an_older_cseq_of_the_same_call_id_is_refused() -> None:
    registrar = make_registrar()
    registered(registrar, cseq=10)  # binding at CSeq 11
    first = registrar.handle(register(cseq=5), PHONE, T0 + 1)
    stale = registrar.handle(
        register(cseq=6, authorization=answer(first), expires=0), PHONE, T0 + 1
    )
    assert (stale.status, stale.reason) == (400, "Invalid CSeq number")
    assert len(registrar.location.lookup("alice", T0 + 1)) == 1
    # Another Call-ID (a rebooted phone) may update it whatever its CSeq.
    assert registered(registrar, now=T0 + 2, call_id="reboot", cseq=1).status == 200


def test_expires_zero_removes_one_binding() -> None:
    registrar = make_registrar()
    registered(registrar, contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"))
    response = registered(registrar, contacts=("<sip:alice@10.0.0.1>",), expires=0, cseq=3)
    assert _contacts(response) == {"sip:alice@10.0.0.2": "600"}


def test_star_removes_every_binding_only_with_expires_zero() -> None:
    registrar = make_registrar()
    registered(registrar, contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"))
    assert registered(registrar, contacts=("*",), expires=600, cseq=3).status == 400
    assert (
        registered(registrar, contacts=("*", "<sip:alice@10.0.0.3>"), expires=0, cseq=5).status
        == 400
    )
    assert len(registrar.location.lookup("alice", T0)) == 2
    response = registered(registrar, contacts=("*",), expires=0, cseq=7)
    assert response.status == 200
    assert response.headers.get_all("contact") == []
    assert registrar.location.lookup("alice", T0) == []


def test_max_contacts() -> None:
    registrar = make_registrar(subscriber(max_contacts=2))
    registered(registrar, contacts=("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>"))
    refused = registered(registrar, contacts=("<sip:alice@10.0.0.3>",), call_id="c3", cseq=1)
    assert (refused.status, refused.reason) == (403, "Forbidden (too many contacts)")
    # Refreshing one that is there, or replacing one by another in one request, is fine.
    assert registered(registrar, contacts=("<sip:alice@10.0.0.1>",), cseq=3).status == 200
    swap = registered(
        registrar,
        contacts=("<sip:alice@10.0.0.1>;expires=0", "<sip:alice@10.0.0.3>"),
        cseq=5,
    )
    assert _contacts(swap).keys() == {"sip:alice@10.0.0.2", "sip:alice@10.0.0.3"}


def test_a_binding_expires() -> None:
    registrar = make_registrar()
    registered(registrar)
    location = registrar.location
    assert len(location.lookup("alice", T0 + 599)) == 1
    assert location.lookup("alice", T0 + 600) == []  # reads never see it once expired
    assert location.expire(T0 + 599) == []
    [gone] = location.expire(T0 + 600)
    assert gone.contact == "sip:alice@192.168.1.10:5060"
    assert len(location) == 0


def test_contact_uris_compare_by_sip_rules() -> None:
    registrar = make_registrar()
    registered(registrar, contacts=("<sip:alice@PHONE.example:5060;ob>",))
    # Host case and unknown parameters do not make a new binding (RFC 3261 19.1.4).
    registered(registrar, contacts=("<sip:alice@phone.example:5060>",), cseq=3)
    assert len(registrar.location.lookup("alice", T0)) == 1


# --- bad input -----------------------------------------------------------------------------------


def test_bad_contacts_get_a_precise_400() -> None:
    registrar = make_registrar()
    for contact, fragment in (
        ("<tel:+15551234567>", "Contact is not a sip: URI"),
        ("<sip:alice@10.0.0.1>;q=2", "q parameter"),
        ("<sip:alice@10.0.0.1", "unterminated"),
    ):
        response = registered(registrar, contacts=(contact,))
        assert response.status == 400, (contact, response)
        assert fragment in response.reason, response.reason


def test_to_without_user_is_refused() -> None:
    registrar = make_registrar()
    request = register(extra=())
    request.headers.set("To", "<sip:switch.example>")
    request.invalidate()
    response = registrar.handle(request, PHONE, T0)
    assert response.status == 400 and "user part" in response.reason


# --- the guard ---------------------------------------------------------------------------------


def test_failed_authentications_ban_the_source_not_others() -> None:
    registrar = make_registrar(
        guard=GuardSettings(fail_limit=3, fail_window=60, ban_time=120, rate=0)
    )
    for n in range(3):
        first = registrar.handle(register(), PHONE, T0 + n)
        bad = registrar.handle(
            register(cseq=2, authorization=answer(first, password="x")), PHONE, T0 + n
        )
        assert bad.status == 403
    # Banned: even the right password is refused now, without a challenge ...
    banned = registrar.handle(register(), PHONE, T0 + 10)
    assert (banned.status, banned.headers.get("www-authenticate")) == (403, None)
    # ... while another source is served as usual,
    other = Address("udp", "192.0.2.99", 5060)
    assert registered(registrar, source=other, now=T0 + 10).status == 200
    # and the ban ends.
    assert registered(registrar, now=T0 + 2 + 121, call_id="later").status == 200


def test_failures_outside_the_window_do_not_ban() -> None:
    registrar = make_registrar(guard=GuardSettings(fail_limit=3, fail_window=10, rate=0))
    for n in range(6):
        first = registrar.handle(register(), PHONE, T0 + 6 * n)
        registrar.handle(
            register(cseq=2, authorization=answer(first, password="x")), PHONE, T0 + 6 * n
        )
    assert registrar.handle(register(), PHONE, T0 + 40).status == 401


def test_a_flood_is_throttled_with_retry_after() -> None:
    registrar = make_registrar(guard=GuardSettings(rate=10, burst=5))
    statuses = [registrar.handle(register(), PHONE, T0).status for _ in range(8)]
    assert statuses == [401] * 5 + [503] * 3
    throttled = registrar.handle(register(), PHONE, T0)
    assert throttled.headers.get("retry-after") == "1"
    # Another source is not affected; the flooding one recovers at the configured rate.
    assert registrar.handle(register(), Address("udp", "192.0.2.99", 5060), T0).status == 401
    assert registrar.handle(register(), PHONE, T0 + 0.2).status == 401


def _guess(registrar: Registrar, user: str, source: Address, now: float) -> Response:
    """One guess at ``user``'s password from ``source``: challenge, then a wrong answer."""
    first = registrar.handle(register(user), source, now)
    if first.status != 401:
        return first
    auth = answer(first, user, password="guess-" + source.host)
    return registrar.handle(register(user, cseq=2, authorization=auth), source, now)


def test_a_spread_attack_backs_the_account_off_but_its_phone_keeps_registering() -> None:
    """Guesses from many addresses, each under the per-source limit: past the account's limit
    untrusted addresses are refused unchecked, the right password included, while the phone
    that registered before goes on refreshing from its address."""
    account = GuardSettings(fail_limit=5, rate=0, account_fail_limit=10, backoff_base=60)
    registrar = make_registrar(guard=account)
    assert registered(registrar, now=T0).status == 200  # the phone, before the attack
    attackers = [Address("udp", f"198.51.100.{n}", 5060) for n in range(1, 41)]
    answers = [_guess(registrar, "alice", a, T0 + 1 + n) for n, a in enumerate(attackers)]
    assert {r.status for r in answers} == {403}
    guard = registrar.guard
    assert guard.stats["backoffs"] == 1 and guard.stats["backoff_refused"] == 30
    # The right password from an address never seen: refused, exactly like a wrong one.
    newcomer = Address("udp", "203.0.113.50", 5060)
    right = registered(registrar, now=T0 + 50, source=newcomer, call_id="attacker")
    wrong = _guess(registrar, "alice", Address("udp", "203.0.113.51", 5060), T0 + 50)
    assert _shape(right) == _shape(wrong)
    assert [b.call_id for b in registrar.location.lookup("alice", T0 + 50)] == ["call-1@phone"]
    # The phone refreshes through the attack.
    for n in range(1, 4):
        refreshed = registered(registrar, now=T0 + 50 + n, cseq=10 * n)
        assert refreshed.status == 200, refreshed


def test_an_unknown_user_under_attack_is_answered_like_a_known_one() -> None:
    account = GuardSettings(fail_limit=0, rate=0, account_fail_limit=3)
    registrar = make_registrar(guard=account)
    shapes: dict[str, list[list[tuple[str, str]]]] = {}
    for user in ("alice", "mallory"):
        responses = [
            _guess(registrar, user, Address("udp", f"198.51.100.{n}", 5060), T0 + n)
            for n in range(1, 7)
        ]
        shapes[user] = [_shape(r) for r in responses]
    assert shapes["alice"] == shapes["mallory"]
    assert registrar.guard.stats["backoff_refused"] == 6


# --- never a crash -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.sampled_from(["Contact", "Expires", "To", "Authorization", "User-Agent"]),
    value=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
        max_size=80,
    ),
)
def test_any_header_value_gets_an_answer(header: str, value: str) -> None:
    registrar = make_registrar()
    first = registrar.handle(register(), PHONE, T0)
    request = register(cseq=2, authorization=answer(first))
    request.headers.set(header, value)
    request.invalidate()
    try:
        data = request.to_bytes()
        message = parse_message(data)
    except SipParseError:
        return  # the transaction layer answers these itself
    assert isinstance(message, Request)
    response = registrar.handle(message, PHONE, T0)
    assert 200 <= response.status < 600
