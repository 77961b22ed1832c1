"""SIP digest authentication: RFC 3261 §22, RFC 7616 (HTTP Digest), RFC 8760 (SHA-256 for SIP).

Sans-IO: this module sees header *values* only (the text after ``WWW-Authenticate:``,
``Proxy-Authenticate:``, ``Authorization:`` or ``Proxy-Authorization:``), never a socket, a
clock or a database. Time is the float ``now`` the caller passes in.

Theory of operation
-------------------

Server side (registrar, peer authentication): :class:`DigestAuthenticator`.

* :meth:`~DigestAuthenticator.challenge` returns one header value per offered algorithm,
  the most preferred first (RFC 8760 §2.3), each with ``qop="auth"``.
* The nonce is stateless: ``base64url(issue_time || random || HMAC-SHA256(secret, ...))``.
  Any node holding the same secret can tell a genuine nonce from a forged one and how old it
  is, so a cluster needs no shared nonce store. Cluster nodes must then pass *wall-clock*
  ``now`` (monotonic clocks differ between hosts); a single node may use either.
* :meth:`~DigestAuthenticator.verify` checks the credentials against the subscriber's HA1
  (passwords are stored only as HA1, RFC 7616 §3.4.2 / §5.2) supplied by a ``lookup_ha1``
  callback, and refuses replays: the nonce-count (``nc``, RFC 7616 §3.4) must strictly
  increase for each nonce. The highest ``nc`` seen per nonce lives in a bounded table; see
  :meth:`~DigestAuthenticator.verify` for how eviction stays safe.

Client side (the switch registering with suppliers, test tools): :func:`select_challenge`
picks the challenge to answer (RFC 8760 §2.4), :func:`build_authorization` answers it.

Not supported (refused with a clear reason): ``qop=auth-int``, the ``-sess`` algorithms,
``userhash`` and ``username*`` (RFC 7616 §3.4, §3.4.4), SHA-512-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "AuthResult",
    "DigestAuthenticator",
    "DigestError",
    "DigestParseError",
    "build_authorization",
    "compute_ha1",
    "compute_response",
    "parse_auth_params",
    "select_challenge",
]


class DigestError(ValueError):
    """A digest challenge or credential this module cannot work with (unsupported feature)."""


class DigestParseError(DigestError):
    """A header value that is not ``scheme auth-param *("," auth-param)`` (RFC 3261 §25.1)."""


# --------------------------------------------------------------------------------------------
# Algorithms (RFC 7616 §3.2, §6.1; RFC 8760 §2.2)


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Keyed by the lower-cased token: RFC 7616 §3.3 does not make algorithm names case-sensitive
# and old RFC 2617 clients are known to send "md5".
_ALGORITHMS: dict[str, tuple[str, Callable[[bytes], str]]] = {
    "md5": ("MD5", _md5_hex),
    "sha-256": ("SHA-256", _sha256_hex),
}
_HEX_LEN = {"MD5": 32, "SHA-256": 64}


def _algorithm(name: str) -> tuple[str, Callable[[bytes], str]]:
    """Canonical name and hex-digest function for an algorithm token."""
    try:
        return _ALGORITHMS[name.lower()]
    except KeyError:
        raise DigestError(f"unsupported digest algorithm {name!r}") from None


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) as lower-case hex (RFC 7616 §3.4.2).

    This is what the subscriber store keeps instead of the password, one value per algorithm
    (the realm is part of the hash, so changing the realm means re-provisioning passwords).
    ``algorithm`` is ``"MD5"`` or ``"SHA-256"`` (case-insensitive).
    """
    _, hexdigest = _algorithm(algorithm)
    return hexdigest(f"{username}:{realm}:{password}".encode())


def compute_response(
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` parameter (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 when ``qop`` is None).

    With ``qop="auth"``: ``H(HA1:nonce:nc:cnonce:qop:HA2)``; without qop (RFC 2069 style,
    legacy servers only): ``H(HA1:nonce:HA2)``; in both ``HA2 = H(method:uri)``
    (RFC 7616 §3.4.3). ``nc`` is the 8-hex-digit string exactly as it goes on the wire,
    ``uri`` the ``uri`` parameter (not necessarily the Request-URI).
    """
    _, hexdigest = _algorithm(algorithm)
    ha2 = hexdigest(f"{method}:{uri}".encode())
    if qop is None:
        return hexdigest(f"{ha1}:{nonce}:{ha2}".encode())
    if nc is None or cnonce is None:
        raise DigestError("qop requires nc and cnonce")
    return hexdigest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# --------------------------------------------------------------------------------------------
# Header value grammar (RFC 3261 §25.1, RFC 7235 §2.1)
#
#   challenge / credentials = auth-scheme LWS auth-param *(COMMA auth-param)
#   auth-param    = auth-param-name EQUAL ( token / quoted-string )
#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
#
# The token class is SIP's (RFC 3261 §25.1) joined with HTTP's tchar (RFC 7230 §3.2.6) so
# header values written by HTTP-minded stacks parse too. Empty list elements ("a=1,,b=2") are
# tolerated as RFC 7230 §7 asks of recipients; anything else out of grammar is an error.

_TOKEN = r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+"
_SCHEME_RE = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|\Z)")
_ELEMENT_RE = re.compile(
    rf"[ \t]*(?:(?P<name>{_TOKEN})[ \t]*=[ \t]*"
    r'(?:"(?P<quoted>(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n])*)"'
    rf"|(?P<token>{_TOKEN})))?[ \t]*(?:,|\Z)"
)
# Line folding (CRLF followed by whitespace) is equivalent to one SP (RFC 3261 §7.3.1).
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a challenge or credentials header value into its scheme and parameters.

    ``'Digest realm="a b", nc=00000001'`` gives ``("Digest", {"realm": "a b", "nc":
    "00000001"})``. The scheme is returned as written (compare it case-insensitively,
    RFC 7235 §2.1); parameter names are lower-cased; quoted-string values are unquoted and
    their backslash escapes resolved (RFC 3261 §25.1). A parameter given twice, a parameter
    without a value, an unterminated quote or stray characters raise
    :class:`DigestParseError`. The token68 form (``Basic dXNlcg==``) is not Digest and is
    refused too.
    """
    if "\r" in value or "\n" in value:
        value = _FOLD_RE.sub(" ", value)
        if "\r" in value or "\n" in value:
            raise DigestParseError("bare CR or LF in header value")
    m = _SCHEME_RE.match(value)
    if m is None:
        raise DigestParseError("missing auth-scheme")
    scheme = m.group(1)
    params: dict[str, str] = {}
    pos, end = m.end(), len(value)
    while pos < end:
        m = _ELEMENT_RE.match(value, pos)
        if m is None:
            # The offset only: the value may hold a response digest, which has no place in logs.
            raise DigestParseError(f"malformed auth-param at offset {pos}")
        pos = m.end()
        name = m.group("name")
        if name is None:
            continue  # empty list element
        name = name.lower()
        if name in params:
            raise DigestParseError(f"parameter {name!r} given twice")
        quoted = m.group("quoted")
        if quoted is None:
            params[name] = m.group("token")
        elif "\\" in quoted:
            params[name] = _QUOTED_PAIR_RE.sub(r"\1", quoted)
        else:
            params[name] = quoted
    return scheme, params


def _quote(value: str) -> str:
    """A quoted-string for ``value``, escaping ``"`` and ``\\`` (RFC 3261 §25.1)."""
    if "\r" in value or "\n" in value:
        # A CR/LF would let a value end the header line: header injection.
        raise ValueError("CR or LF in a digest parameter value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Server side


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of :meth:`DigestAuthenticator.verify`.

    An unknown username and a wrong password give equal results except for ``reason``, so
    the caller's answer cannot tell an attacker which usernames exist.
    """

    ok: bool
    """The credentials are valid and fresh: the request is authenticated as ``username``."""
    username: str | None
    """The username the credentials *claim* (authenticated only when ``ok``); None if absent."""
    stale: bool
    """The digest was right but the nonce can no longer be used (expired, or its nonce-count
    was replayed): challenge again with ``stale=True`` so the client retries with the new
    nonce without asking the user for a password (RFC 7616 §3.3)."""
    reason: str
    """Why, for logs only. Never holds passwords, HA1 or response values."""
    uri: str | None = None
    """The ``uri`` parameter: the caller checks it against the Request-URI (RFC 3261 §22.4)."""
    algorithm: str | None = None
    """Canonical algorithm the credentials used (``"MD5"`` or ``"SHA-256"``), when known."""


_NONCE_MAC_LABEL = b"smartswitch/sip/digest nonce v1\x00"
_NONCE_TIME = struct.Struct(">d")
_NONCE_RANDOM_LEN = 16
_NONCE_MAC_LEN = 32
_NONCE_RAW_LEN = _NONCE_TIME.size + _NONCE_RANDOM_LEN + _NONCE_MAC_LEN  # 56 bytes
_NONCE_TEXT_LEN = 75  # unpadded base64url of 56 bytes
_NONCE_RE = re.compile(rf"[A-Za-z0-9_-]{{{_NONCE_TEXT_LEN}}}")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


class DigestAuthenticator:
    """Challenges and verifies SIP digest credentials for one realm (RFC 3261 §22.2-22.4).

    ``secret`` keys the nonce HMAC; every node of a cluster that must accept each other's
    nonces shares it (at least 16 bytes). ``nonce_ttl`` is how many seconds a nonce stays
    usable. ``algorithms`` are offered most preferred first (RFC 8760 §2.3).
    ``max_tracked_nonces`` bounds the replay table. ``opaque``, when given, is sent in every
    challenge and must come back unchanged (RFC 7616 §3.3).

    Replay protection is per instance: several SIP workers or nodes each keep their own
    table, so a request captured on the wire could be replayed once to a *different* worker
    within ``nonce_ttl``. Keep ``nonce_ttl`` short where that matters.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 100_000,
        *,
        opaque: str | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if not nonce_ttl > 0 or not math.isfinite(nonce_ttl):
            raise ValueError("nonce_ttl must be a positive number of seconds")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        canonical = tuple(_algorithm(a)[0] for a in algorithms)
        if not canonical or len(set(canonical)) != len(canonical):
            raise ValueError("algorithms must be non-empty and without duplicates")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = canonical
        self.max_tracked_nonces = max_tracked_nonces
        self.opaque = opaque
        self._secret = secret
        # Pre-rendered so challenge() only formats the nonce; _quote also rejects CR/LF here.
        self._realm_param = _quote(realm)
        self._opaque_param = "" if opaque is None else f", opaque={_quote(opaque)}"
        # Unknown users are checked against a random HA1 nobody can know, so they cost the
        # same hashing as a wrong password: timing must not reveal which usernames exist.
        self._dummy_ha1 = {a: secrets.token_hex(_HEX_LEN[a] // 2) for a in canonical}
        # nonce -> (highest nc accepted, issue time), in order of first successful use.
        # OrderedDict, not dict: popping the oldest entry must stay O(1) (a plain dict's
        # next(iter(d)) gets slower the more entries were deleted from its front).
        self._tracked: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Issue time of the newest nonce ever dropped from _tracked (see _accept_nc).
        self._forgotten_before = -math.inf

    @property
    def tracked_nonces(self) -> int:
        """How many nonces the replay table holds now (at most ``max_tracked_nonces``)."""
        return len(self._tracked)

    # -- nonces ------------------------------------------------------------------------------

    def _mac(self, payload: bytes) -> bytes:
        # The realm is MACed too, so a nonce from one realm is not genuine in another even if
        # an operator reuses the secret.
        msg = _NONCE_MAC_LABEL + self.realm.encode() + b"\x00" + payload
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def make_nonce(self, now: float) -> str:
        """A fresh nonce: base64url(issue time, 16 random bytes, HMAC-SHA256) (RFC 7616 §5.4)."""
        if not math.isfinite(now):
            raise ValueError("now must be a finite number")
        payload = _NONCE_TIME.pack(now) + secrets.token_bytes(_NONCE_RANDOM_LEN)
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _nonce_issue_time(self, nonce: str) -> float | None:
        """The issue time of a nonce this realm's secret made, or None if it is not one."""
        if _NONCE_RE.fullmatch(nonce) is None:
            return None
        raw = base64.urlsafe_b64decode(nonce + "=")
        # The last base64 character carries 2 bits the decoder ignores, so 4 spellings decode
        # to the same bytes. Only our own spelling is genuine: the replay table is keyed by the
        # nonce text, and a respelled nonce must not start a fresh nc count.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
            return None
        payload, mac = raw[:-_NONCE_MAC_LEN], raw[-_NONCE_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        issued: float = _NONCE_TIME.unpack_from(payload)[0]
        return issued

    def _expired(self, issued: float, now: float) -> bool:
        # abs(): with wall-clock time across a cluster a nonce may come from a node whose
        # clock is slightly ahead; one from far in the future is refused like an old one.
        return abs(now - issued) > self.nonce_ttl

    # -- challenge ---------------------------------------------------------------------------

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, preferred first.

        RFC 8760 §2.3: several challenges for one realm each use a different algorithm and
        are listed in order of preference; the client answers the first it supports. They
        share one nonce (our nonces are not bound to an algorithm). ``qop="auth"`` is always
        offered (RFC 8760 makes qop mandatory for SIP). Pass ``stale=True`` after a
        result with ``stale`` set (RFC 7616 §3.3). Each value goes in its own header field
        (RFC 3261 §7.3.1 forbids joining these with commas).
        """
        nonce = self.make_nonce(now)
        tail = (", stale=true" if stale else "") + self._opaque_param
        return [
            f'Digest realm={self._realm_param}, nonce="{nonce}", algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        ]

    # -- verification ------------------------------------------------------------------------

    def verify(
        self,
        method: str,
        header_value: str,
        lookup_ha1: Callable[[str, str, str], str | None],
        now: float,
    ) -> AuthResult:
        """Check an Authorization / Proxy-Authorization value (RFC 3261 §22.4, RFC 7616 §3.4).

        ``lookup_ha1(username, realm, algorithm)`` returns the stored HA1 hex for that
        algorithm, or None for an unknown user. Never raises on bad input: malformed or
        unacceptable credentials give ``ok=False`` with a ``reason``. The caller checks
        ``result.uri`` against the Request-URI and, on failure, challenges again (with
        ``stale=result.stale``).

        Accepted only with: scheme Digest, our realm, an algorithm we offered, ``qop=auth``
        (no qop, the RFC 2069 form, and ``auth-int`` are refused), a nonce whose HMAC
        verifies, a correct response, a nonce younger than ``nonce_ttl`` and an ``nc``
        above every ``nc`` accepted before with this nonce (RFC 7616 §3.4, §5.5).
        """
        try:
            scheme, p = parse_auth_params(header_value)
        except DigestParseError as exc:
            return _refused(None, f"malformed credentials: {exc}")
        username = p.get("username")
        uri = p.get("uri")

        def refuse(reason: str, algorithm: str | None = None) -> AuthResult:
            return _refused(username, reason, uri=uri, algorithm=algorithm)

        # Structural checks first: they depend only on the request, never on whether the
        # user exists, so failing fast here reveals nothing.
        if scheme.lower() != "digest":
            return refuse(f"unsupported auth-scheme {scheme!r}")
        if username is None:
            if "username*" in p:
                return refuse("username* (RFC 7616 §3.4) is not supported")
            return refuse("missing username")
        if p.get("userhash", "false").lower() != "false":
            return refuse("userhash (RFC 7616 §3.4.4) is not supported")
        for name in ("realm", "nonce", "uri", "response"):
            if name not in p:
                return refuse(f"missing {name}")
        if p["realm"] != self.realm:
            # Not ours: RFC 3261 §22.3 lets several credentials for different realms coexist.
            return refuse("realm mismatch")
        alg_token = p.get("algorithm", "MD5")  # RFC 7616 §3.3: absent means MD5
        known_alg = _ALGORITHMS.get(alg_token.lower())
        algorithm = known_alg[0] if known_alg is not None else None
        if algorithm is None or algorithm not in self.algorithms:
            return refuse("algorithm not offered")
        qop = p.get("qop")
        if qop is None:
            return refuse("qop missing (RFC 2069 form refused, RFC 8760)", algorithm)
        if qop.lower() != "auth":
            return refuse(f"qop {qop!r} not supported (only auth)", algorithm)
        nc_text = p.get("nc")
        if nc_text is None or _NC_RE.fullmatch(nc_text) is None:
            return refuse("nc missing or not 8 hex digits", algorithm)
        cnonce = p.get("cnonce")
        if not cnonce:
            return refuse("cnonce missing", algorithm)
        response = p["response"]
        if len(response) != _HEX_LEN[algorithm] or _HEX_RE.fullmatch(response) is None:
            return refuse("response is not a hex digest of the algorithm's size", algorithm)
        if self.opaque is not None and p.get("opaque") != self.opaque:
            return refuse("opaque missing or changed", algorithm)
        nonce = p["nonce"]
        issued = self._nonce_issue_time(nonce)
        if issued is None:
            return refuse("nonce not issued by this realm's secret", algorithm)

        # From here on an unknown user and a wrong password take the same path and the same
        # work: a dummy HA1 stands in, the response is computed and compared all the same.
        stored = lookup_ha1(username, self.realm, algorithm)
        known = (
            stored is not None
            and len(stored) == _HEX_LEN[algorithm]
            and _HEX_RE.fullmatch(stored) is not None
        )
        ha1 = stored.lower() if known and stored is not None else self._dummy_ha1[algorithm]
        expected = compute_response(
            ha1, nonce, method, p["uri"], algorithm, qop=qop, nc=nc_text, cnonce=cnonce
        )
        # compare_digest: a byte-by-byte early exit would time-leak how much of a guess is right.
        matched = hmac.compare_digest(expected.encode(), response.lower().encode())
        if not (known and matched):
            if stored is None:
                return refuse("unknown user", algorithm)
            if not known:
                return refuse("stored HA1 is not a hex digest for the algorithm", algorithm)
            return refuse("wrong password", algorithm)

        # The digest is right: only now may the nonce's state be consulted or changed. Doing
        # it earlier would let anyone who saw a nonce burn its nc with a bogus request, and
        # stale=True must only be sent for a valid digest (RFC 2617 §3.2.1).
        if self._expired(issued, now):
            return _refused(username, "nonce expired", stale=True, uri=uri, algorithm=algorithm)
        replay = self._accept_nc(nonce, int(nc_text, 16), issued, now)
        if replay is not None:
            # stale=True rather than a plain failure: a genuine client that reused an nc (or
            # whose requests crossed) recovers with a fresh nonce, and an attacker replaying a
            # captured request gains nothing from a new nonce it cannot answer.
            return _refused(username, replay, stale=True, uri=uri, algorithm=algorithm)
        return AuthResult(True, username, False, "ok", uri=uri, algorithm=algorithm)

    def _accept_nc(self, nonce: str, nc: int, issued: float, now: float) -> str | None:
        """Record ``nc`` for ``nonce`` if it is above every nc seen; else say why not.

        The table is bounded. Entries are dropped oldest-first-use first, expired ones as
        soon as they reach the front, live ones when the table is full. Forgetting a live
        nonce must not reopen it to replays, so the newest issue time ever dropped is kept
        (``_forgotten_before``) and an untracked nonce issued at or before it is refused as
        stale: its client simply gets a fresh nonce. The same rule covers a wall clock that
        steps backwards and revives a nonce dropped as expired.
        """
        entry = self._tracked.get(nonce)
        if entry is not None:
            if nc <= entry[0]:
                return "nonce count replayed"
            self._tracked[nonce] = (nc, entry[1])
            return None
        if issued <= self._forgotten_before:
            return "nonce no longer tracked for replays"
        tracked = self._tracked
        while tracked:
            oldest, (_, oldest_issued) = next(iter(tracked.items()))
            if not self._expired(oldest_issued, now) and len(tracked) < self.max_tracked_nonces:
                break
            del tracked[oldest]
            self._forgotten_before = max(self._forgotten_before, oldest_issued)
        tracked[nonce] = (nc, issued)
        return None


def _refused(
    username: str | None,
    reason: str,
    *,
    stale: bool = False,
    uri: str | None = None,
    algorithm: str | None = None,
) -> AuthResult:
    return AuthResult(False, username, stale, reason, uri=uri, algorithm=algorithm)


# --------------------------------------------------------------------------------------------
# Client side


def select_challenge(values: Iterable[str]) -> str | None:
    """The challenge value to answer: the first Digest one with an algorithm we support.

    RFC 8760 §2.4: the UAC uses the topmost challenge it supports and ignores those it does
    not understand. ``values`` are WWW-Authenticate (or Proxy-Authenticate) values in message
    order. Returns None when none is usable.
    """
    for value in values:
        try:
            scheme, params = parse_auth_params(value)
        except DigestParseError:
            continue
        if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
            continue
        if params.get("algorithm", "MD5").lower() not in _ALGORITHMS:
            continue
        qop = params.get("qop")
        if qop is not None and "auth" not in _qop_options(qop):
            continue
        return value
    return None


def _qop_options(qop: str) -> set[str]:
    return {opt.strip().lower() for opt in qop.split(",")}


def build_authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int,
    cnonce: str | None = None,
) -> str:
    """An Authorization / Proxy-Authorization value answering ``challenge_value``.

    RFC 3261 §22.2-22.3, RFC 7616 §3.4. Supports MD5 and SHA-256 with ``qop=auth`` and, for
    old suppliers, challenges without qop (RFC 2617 §3.2.2.1 compatibility form: no nc,
    cnonce or qop is sent). ``nc`` is this request's count for the challenge's nonce
    (1 for the first request, then 2, 3, ... while reusing it); ``cnonce`` defaults to a
    random value. The ``opaque`` and ``algorithm`` of the challenge are echoed unchanged.
    Raises :class:`DigestParseError` or :class:`DigestError` for a challenge this module
    cannot answer (not Digest, no realm/nonce, ``-sess`` algorithm, only ``auth-int``).
    """
    scheme, ch = parse_auth_params(challenge_value)
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    if "realm" not in ch or "nonce" not in ch:
        raise DigestError("challenge without realm or nonce")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError("nc must be between 1 and 0xffffffff")
    realm, nonce = ch["realm"], ch["nonce"]
    alg_token = ch.get("algorithm")
    algorithm = _algorithm(alg_token or "MD5")[0]
    ha1 = compute_ha1(username, realm, password, algorithm)

    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
    ]
    qop_offer = ch.get("qop")
    if qop_offer is None:
        response = compute_response(ha1, nonce, method, uri, algorithm)
        parts.append(f'response="{response}"')
    else:
        if "auth" not in _qop_options(qop_offer):
            raise DigestError("challenge offers no qop we support (only auth)")
        nc_text = f"{nc:08x}"
        if cnonce is None:
            cnonce = secrets.token_hex(16)
        response = compute_response(
            ha1, nonce, method, uri, algorithm, qop="auth", nc=nc_text, cnonce=cnonce
        )
        parts.append(f'response="{response}"')
        parts += [f"cnonce={_quote(cnonce)}", "qop=auth", f"nc={nc_text}"]
    if alg_token is not None:
        # Echo the server's spelling; leave it out when the challenge did, as RFC 2069-era
        # servers may not expect it.
        parts.append(f"algorithm={alg_token}")
    if "opaque" in ch:
        parts.append(f"opaque={_quote(ch['opaque'])}")
    return "Digest " + ", ".join(parts)
