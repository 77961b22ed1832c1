"""Who is asking: session cookies for the UI, bearer tokens for the API, CSRF, login limits.

Session cookies are stateless and signed (HMAC-SHA256 with a secret kept in the data
directory): ``base64(json{u, e, n}).signature`` with the user id, the expiry and a random
nonce.  The user is re-read from the database on each request, so a disabled user is out at
once; the cookie itself cannot be revoked before it expires (``SESSION_SECONDS``).
The CSRF token of a session is HMAC(secret, "csrf" + nonce): every form carries it in a hidden
field, htmx sends it in the ``X-CSRF-Token`` header, and a POST without the right one is
refused.  The cookie is HttpOnly and SameSite=Strict; ``cookie_secure`` adds Secure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

COOKIE = "smartswitch_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600


def web_secret(data_dir: Path) -> bytes:
    """The key that signs session cookies, made once and kept (mode 600) in the data dir."""
    path = data_dir / "web.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


LOCAL_PREFIX = "ssl_"


def local_token(data_dir: Path) -> str | None:
    """A read-only API token for commands run on the node's own machine (``smartswitch
    registrations``): derived from the web secret, so whoever can read the data directory
    (the node's operator) has it, and nobody else; None before the node made its secret."""
    path = data_dir / "web.secret"
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return LOCAL_PREFIX + hmac.new(secret, b"local read-only", hashlib.sha256).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    expires: int
    nonce: str


class Signer:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, user_id: int, now: float | None = None) -> str:
        now = time.time() if now is None else now
        body = {"u": user_id, "e": int(now) + SESSION_SECONDS, "n": secrets.token_hex(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(int(body["u"]), int(body["e"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < (time.time() if now is None else now):
            return None
        return session

    def csrf(self, session: Session) -> str:
        return self._sign("csrf" + session.nonce)

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))


class LoginLimiter:
    """At most ``attempts`` failed logins per ``window`` seconds, per client address and per
    user name (either limit blocks): slows password guessing without a database."""

    def __init__(self, attempts: int = 5, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until a login may be tried again; 0 when allowed."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.attempts:
                wait = max(wait, times[0] + self.window - now)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) > 10_000:  # a flood of names: forget the oldest half
            for key in list(self._failures)[:5_000]:
                del self._failures[key]
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, keys: list[str]) -> None:
        for key in keys[1:]:  # the name's count; the address keeps its history
            self._failures.pop(key, None)
