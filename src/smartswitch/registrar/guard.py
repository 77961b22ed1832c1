"""Defence against password guessing and floods, per source address and per account.

Sans-IO: every method takes ``now`` (wall-clock seconds: the same clock throughout, and the
clock of the other nodes when their events are fed in).

Theory of operation
-------------------

Everything here concerns the requests that authenticate by digest: every REGISTER, and the
INVITEs of callers not recognised by an ACL (subscribers and digest customers). Trunks known
by their ACL never come here, so a carrier's call rate is never throttled. The caller (the
registrar, the call policy) asks in this order:

1. :meth:`SourceGuard.check` before anything else: **per source address**.

   * *Throttle*: a token bucket of ``rate`` requests per second per address, bursts up to
     ``burst``. Beyond it: 503 with Retry-After, before any digest work. Answered rather than
     dropped: the server transaction exists already, and an answer ends it (and absorbs the
     sender's retransmissions) where silence would make a UDP sender retransmit eleven times.
   * *Ban*: ``fail_limit`` failures within ``fail_window`` seconds ban the address for
     ``ban_time`` seconds: it is then refused at once (403), with no challenge and no hashing.
     A success does not reset the count: an attacker holding one valid account must not be
     able to clear its record between guesses at others.

2. :meth:`SourceGuard.admit` once the request carries credentials, before they are checked:
   **per account** (the username the credentials claim, known or not). A dictionary attack
   spread over many addresses stays under every per-address limit; it is seen here.

   * Every failed answer for an account counts (:meth:`failed`). ``account_fail_limit``
     failures within ``account_fail_window`` start a **back-off** of ``backoff_base``
     seconds. While it lasts, credentials for that account from an address that is not
     *trusted* are refused **unchecked**, with the same 403 a wrong password gets: a guess
     made then is never compared with the password, so even the right one is refused and the
     attacker learns nothing (no oracle). After the back-off the next failure from an
     untrusted address, while the window still holds ``account_fail_limit`` failures,
     starts the next back-off, twice as long (up to ``backoff_max``): under a sustained
     attack the account is tested a few dozen times a day at most. The level falls by one
     for every ``backoff_decay`` seconds without a failure after the last back-off; while
     it is above 0 the account is still *under attack*, and the next failure from an
     untrusted address starts the next back-off at once.
   * A **trusted** address is one the account authenticated from (:meth:`succeeded`) within
     ``trust_time`` (at most ``max_trusted`` per account, the most recent kept). The
     account's own phone, answering correctly from where it registered, is checked as usual
     and keeps working during an attack: the back-off cannot be turned into a lockout of the
     subscriber by someone who does not know the password. (A phone that moved to a new
     address while its account is attacked waits for the attack's back-off to lapse.)
   * Unknown usernames are counted exactly like known ones (the guard never knows which
     exist), so the answers, and the work behind them, do not depend on whether the
     account exists.

3. :meth:`failed` / :meth:`succeeded` after the check, with the authenticator's result.

Operators see it three ways: the counters in :attr:`SourceGuard.stats` and
:attr:`SourceGuard.failure_reasons` (``/metrics``), :meth:`accounts` and :meth:`bans` (the web
UI's Security page), and one log line per event on the ``smartswitch.security`` logger in a
stable format a fail2ban filter reads (docs/security.md)::

    smartswitch security: auth-failure source=192.0.2.7 account=alice reason=bad-password
    smartswitch security: refused source=192.0.2.7 account=alice reason=account-backoff

The account is percent-encoded (only ``A-Za-z0-9._@+-`` stay as they are), so a username
chosen by an attacker can neither break the line nor add a ``source=`` of its own. Log lines
are rate-limited (:class:`LogLimiter`): at most ``log_per_source`` failure lines per address
per ``log_interval``, one refusal line per address, account and reason per ``log_interval``,
and ``log_rate`` lines per second overall; what is left out is counted in a summary line.

The cluster: :meth:`drain_events` hands over the failures and the new trusts seen here (a
bounded queue, oldest dropped first), for a publisher to send over the signed cluster bus;
another node feeds them in with :meth:`remote_failure` and :meth:`remote_success`. A
remote failure counts towards the account's back-off and the address's ban on this node as
a local one would, a remote success trusts the address here too (so a phone that registered
on one node can call through another while its account is attacked). Remote events are not
queued again and not logged as failures (their node logged them).

Memory is bounded: ``max_sources`` addresses and ``max_accounts`` accounts, least recently
seen forgotten first. Bans, accounts in back-off and trusts are kept in tables of their own,
so that a flood of spoofed addresses or invented usernames cannot push them out.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from smartswitch.sip.digest import AuthResult, DigestParseError, parse_auth_params

__all__ = [
    "REASONS",
    "REFUSALS",
    "AccountState",
    "AccountStatus",
    "GuardEvent",
    "GuardSettings",
    "LogLimiter",
    "SourceGuard",
    "Verdict",
    "claimed_username",
    "failure_reason",
    "log_value",
]

log = logging.getLogger("smartswitch.security")

PREFIX = "smartswitch security:"


class Verdict(enum.Enum):
    ALLOW = "allow"
    BANNED = "banned"
    THROTTLED = "throttled"


class AccountState(enum.Enum):
    NORMAL = "normal"
    UNDER_ATTACK = "under attack"
    """``account_fail_limit`` failures in the window or a back-off level not decayed yet, no
    back-off now: the next failure from an untrusted address starts one."""
    BACKOFF = "back-off"
    """Credentials from untrusted addresses are refused unchecked until ``backoff_until``."""


@dataclass(frozen=True, slots=True)
class GuardSettings:
    fail_limit: int = 5
    """Failed authentications from one address within ``fail_window`` that ban it (0: never)."""
    fail_window: float = 60.0
    ban_time: float = 300.0
    rate: float = 50.0
    """Requests per second one address may send through the guard (0: no limit)."""
    burst: float = 100.0
    max_sources: int = 100_000
    account_fail_limit: int = 10
    """Failed answers for one account within ``account_fail_window`` that start a back-off
    (0: never)."""
    account_fail_window: float = 600.0
    backoff_base: float = 60.0
    """The first back-off of an account, in seconds; each next one is twice as long."""
    backoff_max: float = 3600.0
    backoff_decay: float = 1800.0
    """Seconds without a failure (after the back-off) that lower an account's level by one."""
    trust_time: float = 7 * 86400.0
    """How long an address stays trusted for an account after a success there."""
    max_trusted: int = 8
    """Trusted addresses kept per account (the most recent)."""
    max_accounts: int = 100_000
    log_interval: float = 60.0
    log_per_source: int = 10
    """Failure lines logged per address within ``log_interval`` (enough for fail2ban)."""
    log_rate: float = 20.0
    """Security log lines per second overall (bursts of ``log_burst``)."""
    log_burst: float = 200.0
    max_events: int = 10_000
    """Events kept for the cluster publisher (:meth:`SourceGuard.drain_events`)."""


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A failure or a new trust, for the other nodes (:meth:`SourceGuard.drain_events`)."""

    kind: Literal["failure", "success"]
    account: str | None
    """The username the credentials claimed (None: none could be read)."""
    source: str
    """The address the request came from."""
    when: float
    """Wall-clock time."""
    reason: str = ""
    """A failure's reason (:func:`failure_reason`)."""


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One account as the Security page shows it."""

    account: str
    state: AccountState
    failures: int
    """Failed answers within ``account_fail_window``."""
    backoff_until: float | None
    """When the back-off ends (wall clock), None if there is none now."""
    level: int
    """How many back-offs the current attack has caused (the next lasts ``base * 2**level``)."""
    refused: int
    """Credentials refused unchecked since the account's first failure was recorded."""
    trusted: int
    """Trusted addresses now."""
    last_failure: float | None


# --------------------------------------------------------------------------------------------
# Reasons and log values


_REASONS = {
    "wrong password": "bad-password",
    "unknown user": "unknown-account",
    "stored HA1 is not a hex digest for the algorithm": "bad-password",
}

REASONS = (
    "bad-password",
    "unknown-account",
    "wrong-uri",
    "bad-credentials",
)
"""Why a digest answer failed, as logged and counted: a wrong password, a username nobody
has (the SIP answer is the same as for a wrong password; only the operator sees the
difference), a right digest made for another Request-URI, and anything else wrong with the
credentials (malformed, another realm, an algorithm not offered, a forged nonce)."""

REFUSALS = ("source-banned", "throttled", "account-backoff")
"""Why a request was refused before its credentials were checked."""


def failure_reason(result: AuthResult | None) -> str:
    """The stable reason token of a failed authentication: a result that is ``ok`` failed
    only because the caller found its ``uri`` is not the Request-URI's."""
    if result is None:
        return "bad-credentials"
    if result.ok:
        return "wrong-uri"
    return _REASONS.get(result.reason, "bad-credentials")


def claimed_username(credentials: str) -> str | None:
    """The username an Authorization / Proxy-Authorization value claims, read with the very
    parser :meth:`~smartswitch.sip.digest.DigestAuthenticator.verify` uses (a different
    reading would let crafted credentials be counted against another account than the one
    checked)."""
    try:
        scheme, params = parse_auth_params(credentials)
    except DigestParseError:
        return None
    if scheme.lower() != "digest":
        return None
    return params.get("username")


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


_UNSAFE_ADDRESS = re.compile(r"[^A-Fa-f0-9.:]")


def log_value(text: str | None, limit: int = 64, *, address: bool = False) -> str:
    """A value for a ``key=value`` log field: percent-encoded outside ``A-Za-z0-9._@+-``
    (an ``address``: outside the hex digits, ``.`` and ``:`` of IPv4 and IPv6) and cut to
    ``limit`` characters (``-`` for none), so it holds no space, ``=`` or newline."""
    if not text:
        return "-"
    text = text[:limit]
    unsafe = _UNSAFE_ADDRESS if address else _UNSAFE
    return unsafe.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)


class LogLimiter:
    """Keeps the security log readable under a flood (sans-IO: ``now`` passed in).

    ``allow(key, now, per_key)``: at most ``per_key`` lines per ``key`` within ``interval``
    seconds, and at most ``rate`` lines a second overall (bursts of ``burst``). Lines left
    out are counted; :meth:`suppressed` returns the count once every ``interval`` for a
    summary line."""

    __slots__ = (
        "_keys",
        "_last",
        "_missed",
        "_reported",
        "_tokens",
        "burst",
        "interval",
        "max_keys",
        "rate",
    )

    def __init__(self, rate: float, burst: float, interval: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.interval = rate, max(burst, 1.0), interval
        self._tokens = self.burst
        self._last: float | None = None
        self._keys: OrderedDict[object, tuple[float, int]] = OrderedDict()
        self._missed = 0
        self._reported: float | None = None
        self.max_keys = max_keys

    def allow(self, key: object, now: float, per_key: int = 1) -> bool:
        if self._reported is None:
            self._reported = now
        keys = self._keys
        start, count = keys.get(key, (now, 0))
        if now - start >= self.interval:
            start, count = now, 0
        if count >= per_key:
            self._missed += 1
            return False
        if self.rate > 0:
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self._missed += 1
                return False
            self._tokens -= 1.0
        keys[key] = (start, count + 1)
        keys.move_to_end(key)
        if len(keys) > self.max_keys:
            keys.popitem(last=False)
        return True

    def suppressed(self, now: float) -> int:
        """Lines left out since the last report, once per ``interval`` (else 0)."""
        if self._reported is None:
            self._reported = now
        if not self._missed or now - self._reported < self.interval:
            return 0
        missed, self._missed, self._reported = self._missed, 0, now
        return missed


# --------------------------------------------------------------------------------------------
# The records


class _Source:
    __slots__ = ("failures", "last", "tokens")

    def __init__(self, tokens: float, now: float, fail_limit: int) -> None:
        self.tokens = tokens
        self.last = now
        self.failures: deque[float] = deque(maxlen=max(fail_limit, 1))


_MAX_FAILURES = 1024  # failures remembered per account (the window's count shows "at least")


class _Account:
    __slots__ = ("failures", "last_failure", "level", "refused", "until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque(maxlen=_MAX_FAILURES)
        self.level = 0
        self.until = 0.0
        self.last_failure = -math.inf
        self.refused = 0

    def prune(self, now: float, window: float) -> None:
        failures = self.failures
        while failures and failures[0] <= now - window:
            failures.popleft()

    def level_at(self, now: float, decay: float) -> int:
        """The back-off level after the quiet time since the last failure or the end of the
        last back-off, whichever is later (a back-off is not quiet time: guesses are refused
        then, not absent)."""
        quiet_since = max(self.last_failure, self.until)
        if self.level <= 0 or decay <= 0 or now <= quiet_since:
            return self.level
        return max(0, self.level - int((now - quiet_since) // decay))

    def hot(self, now: float, decay: float) -> bool:
        """In back-off, or with a level still to decay: not to be forgotten under a flood."""
        return self.until > now or self.level_at(now, decay) > 0


class SourceGuard:
    """The node's guard (one for REGISTER and INVITE, so both count towards the same limits)."""

    __slots__ = (
        "_accounts",
        "_backoff_end",
        "_bans",
        "_events",
        "_held",
        "_limiter",
        "_sources",
        "_trust",
        "failure_reasons",
        "settings",
        "stats",
    )

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._bans: OrderedDict[str, float] = OrderedDict()  # address -> banned until
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._held: OrderedDict[str, _Account] = OrderedDict()  # hot ones pushed out above
        self._trust: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()
        self._backoff_end = 0.0  # no account is in back-off after this (a fast path)
        self._events: deque[GuardEvent] = deque(maxlen=max(self.settings.max_events, 1))
        s = self.settings
        self._limiter = LogLimiter(s.log_rate, s.log_burst, s.log_interval)
        self.stats = {
            "banned": 0,
            "throttled": 0,
            "failures": 0,
            "bans": 0,
            "backoff_refused": 0,
            "backoffs": 0,
            "successes": 0,
            "remote_failures": 0,
            "remote_successes": 0,
        }
        self.failure_reasons: Counter[str] = Counter()

    def configure(self, settings: GuardSettings) -> None:
        """New settings; the counts so far are kept (they apply from the next request)."""
        self.settings = settings
        self._limiter = LogLimiter(settings.log_rate, settings.log_burst, settings.log_interval)

    # --- per source ----------------------------------------------------------------------------

    def _source(self, ip: str, now: float) -> _Source:
        sources = self._sources
        source = sources.get(ip)
        if source is None:
            settings = self.settings
            source = _Source(max(settings.burst, 1.0), now, settings.fail_limit)
            sources[ip] = source
            if len(sources) > settings.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(ip)
        return source

    def banned_until(self, ip: str, now: float) -> float | None:
        """When the ban of ``ip`` ends, or None if it is not banned."""
        until = self._bans.get(ip)
        if until is None:
            return None
        if until <= now:
            del self._bans[ip]
            return None
        return until

    def check(self, ip: str, now: float) -> Verdict:
        """May a request from ``ip`` be processed? Counts it against the address's rate."""
        if self._bans and self.banned_until(ip, now) is not None:
            self.stats["banned"] += 1
            self._refused(ip, None, "source-banned", now)
            return Verdict.BANNED
        settings = self.settings
        if settings.rate <= 0:
            return Verdict.ALLOW
        source = self._source(ip, now)
        elapsed = max(0.0, now - source.last)
        source.tokens = min(max(settings.burst, 1.0), source.tokens + elapsed * settings.rate)
        source.last = now
        if source.tokens < 1.0:
            self.stats["throttled"] += 1
            self._refused(ip, None, "throttled", now)
            return Verdict.THROTTLED
        source.tokens -= 1.0
        return Verdict.ALLOW

    def retry_after(self, ip: str, now: float) -> int:
        """Whole seconds until ``ip`` may try again (for Retry-After, RFC 3261 20.33)."""
        until = self.banned_until(ip, now)
        if until is not None:
            return max(1, math.ceil(until - now))
        source = self._sources.get(ip)
        rate = self.settings.rate
        if source is None or rate <= 0:
            return 1
        return max(1, math.ceil((1.0 - source.tokens) / rate))

    def _count_source(self, ip: str, now: float) -> bool:
        """A failure of ``ip``; True if this one got it banned."""
        settings = self.settings
        if settings.fail_limit <= 0:
            return False
        failures = self._source(ip, now).failures
        failures.append(now)
        if len(failures) < settings.fail_limit or now - failures[0] > settings.fail_window:
            return False
        failures.clear()
        bans = self._bans
        bans[ip] = now + settings.ban_time
        bans.move_to_end(ip)
        if len(bans) > settings.max_sources:
            bans.popitem(last=False)
        self.stats["bans"] += 1
        self._log(
            ("ban", ip),
            now,
            f"{PREFIX} source-banned source={log_value(ip, address=True)} seconds={settings.ban_time:.0f}",
        )
        return True

    def bans(self, now: float) -> dict[str, float]:
        """The addresses banned at ``now`` and when each ban ends."""
        return {ip: until for ip, until in self._bans.items() if until > now}

    # --- per account ---------------------------------------------------------------------------

    def _account(self, name: str, create: bool) -> _Account | None:
        accounts = self._accounts
        record = accounts.get(name)
        if record is not None:
            accounts.move_to_end(name)
            return record
        record = self._held.get(name)
        if record is not None or not create:
            return record
        record = accounts[name] = _Account()
        if len(accounts) > self.settings.max_accounts:
            old_name, old = accounts.popitem(last=False)
            # A flood of invented usernames must not push an attacked account out of memory.
            # Its last failure is the time to judge by: where the clock is, for the record.
            if old.hot(old.last_failure, self.settings.backoff_decay):
                held = self._held
                held[old_name] = old
                if len(held) > self.settings.max_accounts:
                    held.popitem(last=False)
        return record

    def trusted(self, account: str, ip: str, now: float) -> bool:
        """Did ``account`` authenticate from ``ip`` within ``trust_time``?"""
        sources = self._trust.get(account)
        if sources is None:
            return False
        when = sources.get(ip)
        return when is not None and now - when < self.settings.trust_time

    def admit(self, ip: str, credentials: str, now: float) -> bool:
        """May the credentials (an Authorization or Proxy-Authorization value) from ``ip`` be
        checked? False while their account is in back-off and ``ip`` is not trusted for it:
        the caller then answers exactly as for a wrong password, without checking them."""
        if now >= self._backoff_end:
            return True  # no account is in back-off: nothing to read
        account = claimed_username(credentials)
        if account is None:
            return True
        record = self._account(account, create=False)
        if record is None or record.until <= now or self.trusted(account, ip, now):
            return True
        record.refused += 1
        self.stats["backoff_refused"] += 1
        self._refused(ip, account, "account-backoff", now)
        # Counted against the address as a wrong guess would be: the attacker cannot tell a
        # refusal from a failure by when the address gets banned either.
        self._count_source(ip, now)
        return False

    def failed(self, ip: str, now: float, result: AuthResult | None = None) -> bool:
        """Count a failed authentication from ``ip``: against the address, and against the
        account the credentials claimed (``result``: the authenticator's; ``ok`` in it means
        right credentials made for another Request-URI). True if this failure got the
        address banned."""
        self.stats["failures"] += 1
        reason = failure_reason(result)
        self.failure_reasons[reason] += 1
        account = result.username if result is not None else None
        self._log(
            ("failure", ip),
            now,
            f"{PREFIX} auth-failure source={log_value(ip, address=True)} account={log_value(account)} "
            f"reason={reason}",
            self.settings.log_per_source,
        )
        self._event(GuardEvent("failure", account, ip, now, reason))
        if account is not None:
            self._count_account(account, ip, now)
        return self._count_source(ip, now)

    def _count_account(self, account: str, ip: str, now: float) -> None:
        settings = self.settings
        record = self._account(account, create=True)
        assert record is not None
        record.prune(now, settings.account_fail_window)
        # Recently attacked (a level not decayed yet): the next failure from an untrusted
        # address starts the next back-off at once, the window full or not.
        record.level = record.level_at(now, settings.backoff_decay)
        record.last_failure = max(record.last_failure, now)
        record.failures.append(now)
        limit = settings.account_fail_limit
        if (
            limit <= 0
            or (len(record.failures) < limit and record.level == 0)
            or record.until > now
            or self.trusted(account, ip, now)
        ):
            return
        seconds = min(settings.backoff_max, settings.backoff_base * 2.0**record.level)
        record.until = now + seconds
        record.level += 1
        self._backoff_end = max(self._backoff_end, record.until)
        self.stats["backoffs"] += 1
        self._log(
            ("backoff", account),
            now,
            f"{PREFIX} account-backoff account={log_value(account)} seconds={seconds:.0f} "
            f"failures={len(record.failures)} level={record.level}",
        )

    def succeeded(self, ip: str, account: str, now: float) -> None:
        """``account`` authenticated from ``ip``: trust the address for it."""
        self.stats["successes"] += 1
        if self._trust_source(account, ip, now):
            self._event(GuardEvent("success", account, ip, now))

    def _trust_source(self, account: str, ip: str, now: float) -> bool:
        """Trust ``ip`` for ``account``; True when that is news worth telling the cluster (a
        new address, or a trust a quarter of ``trust_time`` old refreshed)."""
        settings = self.settings
        trust = self._trust
        sources = trust.get(account)
        if sources is None:
            sources = trust[account] = OrderedDict()
            if len(trust) > settings.max_accounts:
                trust.popitem(last=False)
        else:
            trust.move_to_end(account)
        before = sources.get(ip)
        if before is not None and before >= now:
            return False
        sources[ip] = now
        sources.move_to_end(ip)
        while len(sources) > max(settings.max_trusted, 1):
            sources.popitem(last=False)
        return before is None or now - before >= settings.trust_time / 4

    # --- the cluster ---------------------------------------------------------------------------

    def drain_events(self, limit: int = 1000) -> list[GuardEvent]:
        """The local failures and new trusts not handed over yet, oldest first (at most
        ``limit``): what a cluster publisher sends to the other nodes."""
        events = self._events
        return [events.popleft() for _ in range(min(limit, len(events)))]

    def remote_failure(
        self, account: str | None, source: str, when: float, node: str, reason: str = ""
    ) -> None:
        """A failure another node (``node``) saw: counted against the account and the address
        here as if it had been local (it may start a back-off or a ban here)."""
        self.stats["remote_failures"] += 1
        if account is not None:
            self._count_account(account, source, when)
        self._count_source(source, when)

    def remote_success(self, account: str, source: str, when: float, node: str) -> None:
        """``account`` authenticated from ``source`` on ``node``: trusted here too."""
        self.stats["remote_successes"] += 1
        self._trust_source(account, source, when)

    def _event(self, event: GuardEvent) -> None:
        self._events.append(event)

    # --- what operators see --------------------------------------------------------------------

    def account_status(self, account: str, now: float) -> AccountStatus:
        """The state of one account (an unknown or quiet one is normal with no failures)."""
        settings = self.settings
        record = self._account(account, create=False)
        sources: Mapping[str, float] = self._trust.get(account, {})
        trusted = sum(1 for when in sources.values() if now - when < settings.trust_time)
        if record is None:
            return AccountStatus(account, AccountState.NORMAL, 0, None, 0, 0, trusted, None)
        window = settings.account_fail_window
        failures = sum(1 for when in record.failures if when > now - window)
        limit = settings.account_fail_limit
        level = record.level_at(now, settings.backoff_decay)
        if record.until > now:
            state = AccountState.BACKOFF
        elif limit > 0 and (failures >= limit or level > 0):
            state = AccountState.UNDER_ATTACK
        else:
            state = AccountState.NORMAL
        return AccountStatus(
            account=account,
            state=state,
            failures=failures,
            backoff_until=record.until if record.until > now else None,
            level=level,
            refused=record.refused,
            trusted=trusted,
            last_failure=None if record.last_failure == -math.inf else record.last_failure,
        )

    def accounts(self, now: float, limit: int = 200) -> list[AccountStatus]:
        """The accounts with failures in the window or a back-off level, the most attacked
        first (at most ``limit``)."""
        window = self.settings.account_fail_window
        names = [
            name
            for table in (self._accounts, self._held)
            for name, r in table.items()
            if r.until > now or r.last_failure > now - window or r.level
        ]
        found = [self.account_status(name, now) for name in set(names)]
        found = [s for s in found if s.failures or s.level or s.backoff_until is not None]
        order = {AccountState.BACKOFF: 0, AccountState.UNDER_ATTACK: 1, AccountState.NORMAL: 2}
        found.sort(key=lambda s: (order[s.state], -s.failures, s.account))
        return found[:limit]

    def under_attack(self, now: float) -> int:
        """How many accounts are under attack or in back-off now."""
        return sum(1 for s in self.accounts(now, limit=10**9) if s.state is not AccountState.NORMAL)

    # --- the log -------------------------------------------------------------------------------

    def _refused(self, ip: str, account: str | None, reason: str, now: float) -> None:
        self._log(
            ("refused", ip, account, reason),
            now,
            f"{PREFIX} refused source={log_value(ip, address=True)} account={log_value(account)} reason={reason}",
        )

    def _log(self, key: object, now: float, line: str, per_key: int = 1) -> None:
        limiter = self._limiter
        if limiter.allow(key, now, per_key):
            log.warning("%s", line)
        missed = limiter.suppressed(now)
        if missed:
            log.warning("%s suppressed lines=%d", PREFIX, missed)
