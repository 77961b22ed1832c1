"""The source guard alone: bans, throttling, bounded memory."""

from __future__ import annotations

from smartswitch.registrar.guard import GuardSettings, SourceGuard, Verdict


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
