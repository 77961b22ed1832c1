"""The source guard alone: bans, throttling, bounded memory."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from smartswitch.registrar.guard import (
    AccountState,
    GuardEvent,
    GuardSettings,
    LogLimiter,
    SourceGuard,
    Verdict,
    claimed_username,
    failure_reason,
    log_value,
)
from smartswitch.sip.digest import AuthResult


def test_ban_after_the_limit_within_the_window_and_its_end() -> None:
    guard = SourceGuard(GuardSettings(fail_limit=3, fail_window=10, ban_time=30, rate=0))
    assert not guard.failed("192.0.2.1", 0)
    assert not guard.failed("192.0.2.1", 5)
    assert guard.failed("192.0.2.1", 9)
    assert guard.check("192.0.2.1", 9) is Verdict.BANNED
    assert guard.retry_after("192.0.2.1", 9) == 30
    assert guard.check("192.0.2.2", 9) is Verdict.ALLOW
    assert guard.check("192.0.2.1", 39) is Verdict.ALLOW
    assert guard.bans(39) == {}


def test_zero_limit_never_bans() -> None:
    guard = SourceGuard(GuardSettings(fail_limit=0, rate=0))
    assert not any(guard.failed("192.0.2.1", n) for n in range(100))


def test_bucket_refills_at_the_rate() -> None:
    guard = SourceGuard(GuardSettings(rate=2, burst=2))
    assert [guard.check("a", 0).value for _ in range(3)] == ["allow", "allow", "throttled"]
    assert guard.retry_after("a", 0) == 1
    assert guard.check("a", 0.5) is Verdict.ALLOW
    assert guard.check("a", 0.5) is Verdict.THROTTLED


def test_memory_is_bounded_and_bans_survive_a_spoofed_flood() -> None:
    guard = SourceGuard(GuardSettings(fail_limit=1, rate=10, burst=10, max_sources=100))
    assert guard.failed("198.51.100.1", 0)
    for n in range(1000):
        guard.check(f"10.0.{n // 250}.{n % 250}", 1)
    assert len(guard._sources) <= 100
    assert guard.check("198.51.100.1", 2) is Verdict.BANNED


# --- per account ---------------------------------------------------------------------------------


ACCOUNT = GuardSettings(
    fail_limit=0,  # the per-source ban out of the way: these are about accounts
    rate=0,
    account_fail_limit=5,
    account_fail_window=100,
    backoff_base=10,
    backoff_max=80,
    backoff_decay=1000,
)
PHONE = "192.0.2.10"


def creds(user: str) -> str:
    return f'Digest username="{user}", realm="r", nonce="n", uri="sip:r", response="0"'


def wrong(user: str | None = "alice", reason: str = "wrong password") -> AuthResult:
    return AuthResult(False, user, False, reason)


def spread(guard: SourceGuard, count: int, now: float, user: str = "alice") -> None:
    """``count`` wrong guesses at ``user``, each from an address of its own."""
    for n in range(count):
        source = f"10.1.{n // 250}.{n % 250}"
        if guard.admit(source, creds(user), now):
            guard.failed(source, now, wrong(user))


def test_failures_from_many_sources_put_the_account_in_backoff() -> None:
    guard = SourceGuard(ACCOUNT)
    guard.succeeded(PHONE, "alice", 0)
    spread(guard, 4, 1)
    assert guard.account_status("alice", 1).state is AccountState.NORMAL
    spread(guard, 1, 2)
    status = guard.account_status("alice", 2)
    assert (status.state, status.backoff_until, status.failures) == (AccountState.BACKOFF, 12, 5)
    # A new address is refused unchecked, with or without the right password ...
    assert not guard.admit("203.0.113.1", creds("alice"), 3)
    # ... while the phone where alice succeeded before is checked as usual,
    assert guard.admit(PHONE, creds("alice"), 3)
    # as are other accounts, and alice from anywhere once the back-off is over.
    assert guard.admit("203.0.113.1", creds("bob"), 3)
    assert guard.admit("203.0.113.1", creds("alice"), 12)
    assert guard.account_status("alice", 12).state is AccountState.UNDER_ATTACK
    assert guard.stats["backoff_refused"] == 1
    assert guard.account_status("alice", 3).refused == 1
    assert guard.account_status("alice", 3).trusted == 1


def test_backoff_grows_with_continued_failures_then_decays() -> None:
    guard = SourceGuard(ACCOUNT)
    spread(guard, 5, 0)  # back-off 10 s (level 1)
    lengths = []
    now = 0.0
    for _ in range(5):
        until = guard.account_status("alice", now).backoff_until
        assert until is not None
        lengths.append(until - now)
        now = until  # the attacker's next guess, at the first moment it is checked
        spread(guard, 1, now)
    assert lengths == [10, 20, 40, 80, 80]  # doubling up to backoff_max
    # Quiet after the last back-off: the level decays, one step per 1000 s; while it is above
    # 0 the account is still under attack, and one more failure starts a back-off at once.
    quiet = now + 80 + 2500
    status = guard.account_status("alice", quiet)
    assert (status.state, status.level, status.failures) == (AccountState.UNDER_ATTACK, 4, 0)
    spread(guard, 1, quiet)
    assert guard.account_status("alice", quiet).backoff_until == quiet + 80
    # Quiet long enough: normal again, and it takes the full count to start over.
    calm = quiet + 80 + 5 * 1000
    assert guard.account_status("alice", calm).state is AccountState.NORMAL
    spread(guard, 4, calm)
    assert guard.account_status("alice", calm).backoff_until is None


def test_attack_budget_in_a_day(caplog: pytest.LogCaptureFixture) -> None:
    """The sum of it: a sustained spread attack gets a few dozen checked guesses a day."""
    # A day of refusals is 86 000 log lines (one per new source, as fail2ban reads them):
    # captured, they cost 40 s of CI time; the lines themselves are tested elsewhere.
    caplog.set_level(logging.ERROR, logger="smartswitch.security")
    settings = GuardSettings(fail_limit=0, rate=0)  # the defaults otherwise
    guard = SourceGuard(settings)
    checked = refused = 0
    now = 0.0
    for n in range(86_400):  # one guess a second for a day, each from a new address
        source = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        if guard.admit(source, creds("alice"), now):
            checked += 1
            guard.failed(source, now, wrong())
        else:
            refused += 1
        now += 1
    assert checked < 60, checked
    assert refused > 86_000


def test_trusted_failures_do_not_start_a_backoff() -> None:
    """The subscriber's own phone with a stale password must not lock the account for others."""
    guard = SourceGuard(ACCOUNT)
    guard.succeeded(PHONE, "alice", 0)
    for n in range(10):
        guard.failed(PHONE, n, wrong())
    assert guard.account_status("alice", 10).backoff_until is None


def test_trust_expires_and_is_bounded() -> None:
    settings = GuardSettings(trust_time=100, max_trusted=2)
    guard = SourceGuard(settings)
    guard.succeeded("a", "alice", 0)
    guard.succeeded("b", "alice", 1)
    guard.succeeded("c", "alice", 2)
    assert not guard.trusted("alice", "a", 3)  # the oldest pushed out
    assert guard.trusted("alice", "c", 3)
    assert not guard.trusted("alice", "c", 102)


def test_unknown_usernames_are_counted_like_known_ones() -> None:
    guard = SourceGuard(ACCOUNT)
    spread(guard, 5, 0, user="nobody-has-this-name")
    assert guard.account_status("nobody-has-this-name", 1).state is AccountState.BACKOFF
    assert not guard.admit("203.0.113.1", creds("nobody-has-this-name"), 1)


def test_unreadable_credentials_are_checked_and_count_for_the_source_only() -> None:
    guard = SourceGuard(ACCOUNT)
    spread(guard, 5, 0)
    assert guard.admit("203.0.113.1", "Digest nonsense", 1)
    assert guard.admit("203.0.113.1", "Basic dXNlcg==", 1)
    guard.failed("203.0.113.1", 1, wrong(None, "malformed credentials: x"))
    assert [s.account for s in guard.accounts(1)] == ["alice"]


def test_crafted_credentials_are_read_as_the_authenticator_reads_them() -> None:
    # A username hidden in a quoted value is not the username.
    value = 'Digest realm="x, username=\\"bob\\"", username="alice", nonce="n"'
    assert claimed_username(value) == "alice"
    assert claimed_username('Digest username="a\\"b"') == 'a"b'


def test_a_flood_of_invented_usernames_does_not_free_an_attacked_account() -> None:
    guard = SourceGuard(replace(ACCOUNT, max_accounts=50))
    spread(guard, 5, 0)
    for n in range(500):
        guard.failed("10.9.9.9", 1, wrong(f"user{n}"))
    assert guard.account_status("alice", 2).state is AccountState.BACKOFF
    assert not guard.admit("203.0.113.1", creds("alice"), 2)
    assert len(guard._accounts) <= 50


def test_the_fast_path_reads_nothing_when_no_account_is_in_backoff() -> None:
    guard = SourceGuard(ACCOUNT)
    assert guard.admit("203.0.113.1", "not even a header", 0)


def test_zero_account_limit_never_backs_off() -> None:
    guard = SourceGuard(GuardSettings(fail_limit=0, rate=0, account_fail_limit=0))
    spread(guard, 100, 0)
    assert guard.account_status("alice", 0).state is AccountState.NORMAL


def test_refusals_count_against_the_address_like_failures() -> None:
    guard = SourceGuard(GuardSettings(fail_limit=3, rate=0, account_fail_limit=5))
    spread(guard, 5, 0)
    for _ in range(3):
        assert not guard.admit("203.0.113.1", creds("alice"), 1)
    assert guard.check("203.0.113.1", 1) is Verdict.BANNED


# --- reasons, the log ------------------------------------------------------------------------------


def test_failure_reasons_are_stable_tokens() -> None:
    assert failure_reason(wrong()) == "bad-password"
    assert failure_reason(wrong("x", "unknown user")) == "unknown-account"
    assert failure_reason(wrong("x", "nonce not issued by this realm's secret")) == (
        "bad-credentials"
    )
    assert failure_reason(AuthResult(True, "alice", False, "ok")) == "wrong-uri"
    guard = SourceGuard(ACCOUNT)
    guard.failed("a", 0, wrong())
    guard.failed("a", 0, wrong("bob", "unknown user"))
    assert guard.failure_reasons == {"bad-password": 1, "unknown-account": 1}


def test_log_lines_have_a_stable_format_and_cannot_be_forged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "smartswitch.security")
    guard = SourceGuard(ACCOUNT)
    guard.failed("192.0.2.7", 0, wrong())
    guard.failed("192.0.2.8", 0, wrong("x source=198.51.100.1\nnext", "unknown user"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "smartswitch security: auth-failure source=192.0.2.7 account=alice reason=bad-password",
        "smartswitch security: auth-failure source=192.0.2.8 "
        "account=x%20source%3D198.51.100.1%0Anext reason=unknown-account",
    ]
    assert log_value("ä") == "%C3%A4" and log_value(None) == "-"
    assert log_value("a" * 100) == "a" * 64


def test_refusals_are_logged_once_per_source_and_account(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = SourceGuard(ACCOUNT)
    spread(guard, 5, 0)
    caplog.clear()
    caplog.set_level(logging.WARNING, "smartswitch.security")
    for n in range(20):
        guard.admit("203.0.113.1", creds("alice"), 1 + n)
    guard.admit("203.0.113.2", creds("alice"), 1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "smartswitch security: refused source=203.0.113.1 account=alice reason=account-backoff",
        "smartswitch security: refused source=203.0.113.2 account=alice reason=account-backoff",
    ]


def test_a_flood_cannot_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "smartswitch.security")
    guard = SourceGuard(
        GuardSettings(
            fail_limit=0, rate=0, account_fail_limit=0, log_rate=10, log_burst=20, log_interval=60
        )
    )
    for n in range(10_000):  # 10 000 failures from 10 000 addresses in 10 s
        guard.failed(f"10.2.{n // 250}.{n % 250}", n / 1000, wrong())
    guard.failed("10.3.0.1", 61, wrong())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) < 20 + 10 * 11 + 3
    assert lines[-1].startswith("smartswitch security: suppressed lines=")


def test_log_limiter_per_key_and_summary() -> None:
    limiter = LogLimiter(rate=0, burst=1, interval=60)
    assert [limiter.allow("k", t, 2) for t in (0, 1, 2)] == [True, True, False]
    assert limiter.suppressed(30) == 0  # not before the interval
    assert limiter.suppressed(61) == 1
    assert limiter.allow("k", 61, 2)


# --- the cluster -----------------------------------------------------------------------------------


def test_events_for_the_cluster_and_remote_ones_fed_in() -> None:
    node1, node2 = SourceGuard(ACCOUNT), SourceGuard(ACCOUNT)
    node1.succeeded(PHONE, "alice", 0)
    node1.succeeded(PHONE, "alice", 1)  # a refresh of a fresh trust: no news
    spread(node1, 5, 2)
    events = node1.drain_events()
    assert events[0] == GuardEvent("success", "alice", PHONE, 0)
    assert [e.kind for e in events] == ["success"] + ["failure"] * 5
    assert node1.drain_events() == []
    for event in events:
        if event.kind == "failure":
            node2.remote_failure(event.account, event.source, event.when, "node1", event.reason)
        else:
            assert event.account is not None
            node2.remote_success(event.account, event.source, event.when, "node1")
    # node2 now holds alice in back-off too, and trusts her phone.
    assert node2.account_status("alice", 3).state is AccountState.BACKOFF
    assert not node2.admit("203.0.113.1", creds("alice"), 3)
    assert node2.admit(PHONE, creds("alice"), 3)
    assert node2.drain_events() == []  # remote events are not passed on again
