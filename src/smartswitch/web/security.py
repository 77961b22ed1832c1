"""Who is asking: session cookies for the UI, bearer tokens for the API, CSRF, login limits;
and the headers every response carries.

Session cookies are stateless and signed (HMAC-SHA256 with a secret kept in the data
directory): ``base64(json{u, e, n}).signature`` with the user id, the expiry and a random
nonce.  The user is re-read from the database on each request, so a disabled user is out at
once; the cookie itself cannot be revoked before it expires (``SESSION_SECONDS``).
The CSRF token of a session is HMAC(secret, "csrf" + nonce): every form carries it in a hidden
field, htmx sends it in the ``X-CSRF-Token`` header, and a POST without the right one is
refused.  The cookie is HttpOnly and SameSite=Strict; ``cookie_secure`` adds Secure.

A session ends before its expiry by being revoked (:class:`Revocations`): at logout, and at
login for the session the browser had before (a login always starts a new session, with a new
nonce and so a new CSRF token: a session id planted before the login is worth nothing after
it). Revoked nonces are kept until their cookie would have expired, in the data directory
(``web.revoked``), so a restart does not bring them back; the cookies are the node's own (its
``web.secret``), and so are its revocations.

Every response carries :func:`security_headers`: a Content-Security-Policy that allows only
the node's own scripts, styles, images and form targets (no inline script or style: the pages
have none, htmx is told to add none, and ``/static/app.js`` does what ``onsubmit`` attributes
did), no framing, ``nosniff``, a same-origin Referrer-Policy, and HSTS when ``cookie_secure``
says the UI is served over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

COOKIE = "smartswitch_session"
REVOKED_FILE = "web.revoked"
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


CONTROL_PREFIX = "ssc_"


def local_control_token(data_dir: Path) -> str | None:
    """The token of commands that drive the node from its own machine (``smartswitch
    drain``): derived from the web secret like :func:`local_token`, with another label, so
    it is held by whoever may read the data directory and by nobody else, and a read-only
    local token is not one. None before the node made its secret."""
    path = data_dir / "web.secret"
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return CONTROL_PREFIX + hmac.new(secret, b"local node control", hashlib.sha256).hexdigest()


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


class Revocations:
    """Sessions ended before their expiry (logout, a new login), by nonce, until they expire.

    Kept in memory and in ``path`` (one ``nonce expiry`` a line, rewritten when it changes:
    logins and logouts are rare), so that a restart does not revive them."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._nonces: dict[str, int] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                nonce, _, expires = line.partition(" ")
                if nonce and expires.isdigit():
                    self._nonces[nonce] = int(expires)

    def revoke(self, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        nonces = {n: e for n, e in self._nonces.items() if e >= now}
        nonces[session.nonce] = session.expires
        self._nonces = nonces
        if self.path is not None:
            text = "".join(f"{n} {e}\n" for n, e in nonces.items())
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, self.path)

    def __contains__(self, session: Session) -> bool:
        return session.nonce in self._nonces


# The node's own scripts, styles, images and form targets only; nothing inline, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(https: bool) -> list[tuple[str, str]]:
    """The headers every response carries (``https``: the node's ``cookie_secure``, which says
    the UI is served over HTTPS: only then may HSTS be sent)."""
    headers = [
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if https:
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def inline_script_hashes(html: str) -> list[str]:
    """CSP sources (``'sha256-...'``) for the inline scripts of a page we do not write
    ourselves (FastAPI's Swagger UI page)."""
    bodies = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in bodies
    ]
