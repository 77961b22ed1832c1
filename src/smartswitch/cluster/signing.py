"""Signed requests on the cluster bus: the key, the canonical strings, and their checks.

Sans-IO: bytes, header mappings and ``now`` in, header dicts and verdicts out. The asyncio
client is :mod:`smartswitch.cluster.bus`, the server side :mod:`smartswitch.cluster.endpoints`.

Theory of operation
-------------------
Every node holds the cluster secret. Nobody signs with it: each use of the secret derives its
own key with HKDF-SHA256 (RFC 5869) and a label, so the bus key reveals nothing about the
replication password or any later key (``derive_key(secret, BUS_KEY_LABEL)``).

A request carries six headers (:data:`SIGNED_HEADERS`): the sender's node name, the recipient's
node name, the time (integer Unix seconds), a random 128-bit nonce, the SHA-256 of the body and
the HMAC-SHA256 of the canonical string::

    smartswitch-bus/1 \\n METHOD \\n /path?query \\n body-sha256 \\n time \\n nonce \\n from \\n to

(the fields joined by a line feed, no trailing one). The body's digest travels as a header so
that the receiver checks the signature *before* it reads the body: a forged, stale or replayed
request is refused from its headers alone and its body is never read. The recipient's name is
signed so that a request captured on its way to one node cannot be replayed to another.

The receiver (:class:`Verifier`) refuses, in this order, a request that is:

* ``missing`` a header, or ``malformed`` (a header of the wrong shape);
* ``misdirected``: addressed to another node;
* ``stale``: its time more than the window (30 s) from ours, either way;
* ``forged``: its signature does not match (a wrong key, or any signed part changed on the way:
  method, path, time, nonce, names);
* ``unknown-node``: from a name that is not a member (when the verifier is given the members);
* ``replayed``: its nonce already accepted within the window;
* ``altered``: its body does not match the signed digest;
* ``nonce-overflow``: the nonce cache is full and this request is too old to be checked against
  the nonces it had to forget (see :class:`NonceCache`); never seen below the cache's size.

Only a request that passed every check enters the nonce cache, so junk, however much of it, does
not grow it. Every refusal is counted by reason (:attr:`Verifier.refused`, for ``/metrics``).

The answer to an accepted request is signed too, bound to the request's nonce (which is fresh):
``smartswitch-bus/1 response \\n status \\n request-nonce \\n body-sha256 \\n from \\n to``. So
the data a node pulls (another node's registrations, its status) is as trustworthy as what it
is pushed, and an old answer cannot be played back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "BUS_KEY_LABEL",
    "HEADER_BODY",
    "HEADER_FROM",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIME",
    "HEADER_TO",
    "SIGNED_HEADERS",
    "WINDOW",
    "BusAuthError",
    "NonceCache",
    "PendingRequest",
    "Refusal",
    "SignedRequest",
    "Signer",
    "Verifier",
    "body_digest",
    "canonical_request",
    "canonical_response",
    "derive_key",
    "hkdf_sha256",
]

VERSION = "smartswitch-bus/1"
BUS_KEY_LABEL = "smartswitch cluster bus v1"
"""The HKDF ``info`` of the key that signs bus requests and answers."""
_SALT = b"smartswitch cluster"

WINDOW = 30.0
"""Seconds a request's time may differ from the receiver's clock, either way."""

HEADER_FROM = "X-Cluster-Node"
HEADER_TO = "X-Cluster-To"
HEADER_TIME = "X-Cluster-Time"
HEADER_NONCE = "X-Cluster-Nonce"
HEADER_BODY = "X-Cluster-Body-SHA256"
HEADER_SIGNATURE = "X-Cluster-Signature"
SIGNED_HEADERS = (
    HEADER_FROM,
    HEADER_TO,
    HEADER_TIME,
    HEADER_NONCE,
    HEADER_BODY,
    HEADER_SIGNATURE,
)

_NAME = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")  # printable ASCII, no edge spaces
_TIME = re.compile(r"[0-9]{1,12}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TARGET = re.compile(r"/[!-~]*")


class Refusal(StrEnum):
    """Why a request was refused: the label of the ``/metrics`` counter and the 401's detail."""

    MISSING = "missing"
    MALFORMED = "malformed"
    MISDIRECTED = "misdirected"
    STALE = "stale"
    FORGED = "forged"
    UNKNOWN_NODE = "unknown-node"
    REPLAYED = "replayed"
    ALTERED = "altered"
    NONCE_OVERFLOW = "nonce-overflow"


class BusAuthError(Exception):
    """A request (or an answer) that does not prove it comes from a member: answered with 401."""

    status = 401

    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF with SHA-256 (RFC 5869 section 2): extract, then expand to ``length`` bytes."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 gives 1 to 8160 bytes")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def derive_key(cluster_secret: str, label: str = BUS_KEY_LABEL) -> bytes:
    """The 32-byte key for one use of the cluster secret, named by ``label``."""
    if not cluster_secret:
        raise ValueError("the cluster secret is empty: the cluster bus needs one")
    return hkdf_sha256(cluster_secret.encode(), _SALT, label.encode())


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str, target: str, digest: str, signed_at: int, nonce: str, sender: str, to: str
) -> bytes:
    """The bytes a request's signature covers (see the module's docstring)."""
    fields = (VERSION, method.upper(), target, digest, str(signed_at), nonce, sender, to)
    return "\n".join(fields).encode()


def canonical_response(status: int, nonce: str, digest: str, responder: str, to: str) -> bytes:
    """The bytes an answer's signature covers: bound to the request's nonce."""
    return "\n".join((f"{VERSION} response", str(status), nonce, digest, responder, to)).encode()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a node name on the cluster bus is printable ASCII: {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request whose headers passed: signed by a member, fresh, for us, not yet seen."""

    method: str
    target: str
    sender: str
    signed_at: int
    nonce: str
    digest: str


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request that passed every check; ``sender`` is authenticated."""

    method: str
    target: str
    sender: str
    signed_at: int
    nonce: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON; :class:`ValueError` if it is not (the handler answers 422)."""
        return json.loads(self.body) if self.body else None


class NonceCache:
    """The nonces of accepted requests, each kept until its request could no longer pass the
    time check (``ttl``, twice the window, from when it was accepted).

    Memory is bounded twice: entries expire, and there are at most ``max_entries``. When full,
    the oldest entry is dropped and its request's signing time raises :attr:`floor`: a request
    signed at or before the floor can no longer be told from a replay and is refused
    (``nonce-overflow``). So a full cache costs availability for a moment, never a replay.
    """

    def __init__(self, ttl: float = 2 * WINDOW, max_entries: int = 65_536) -> None:
        if max_entries < 1:
            raise ValueError("a nonce cache holds at least one nonce")
        self.ttl = ttl
        self.max_entries = max_entries
        self.floor = float("-inf")
        # nonce -> (expiry, signed_at); insertion order is acceptance order, so expiry order
        # too (for a clock that does not step back).
        self._entries: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._entries

    def expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            nonce = next(iter(entries))
            if entries[nonce][0] >= now:
                break
            del entries[nonce]

    def add(self, nonce: str, signed_at: int, now: float) -> bool:
        """Remember ``nonce``; False if it is already remembered (a replay)."""
        self.expire(now)
        if nonce in self._entries:
            return False
        while len(self._entries) >= self.max_entries:
            oldest = next(iter(self._entries))
            self.floor = max(self.floor, self._entries.pop(oldest)[1])
        self._entries[nonce] = (now + self.ttl, signed_at)
        return True


class Signer:
    """Signs this node's requests and checks the answers to them."""

    def __init__(self, node: str, key: bytes) -> None:
        self.node = _check_name(node)
        self._key = key

    def sign(
        self,
        method: str,
        target: str,
        body: bytes,
        to: str,
        now: float,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """The headers that make ``method target`` with ``body`` a request to node ``to``."""
        if not _TARGET.fullmatch(target):
            raise ValueError(f"a bus path is printable ASCII starting with /: {target!r}")
        nonce = secrets.token_hex(16) if nonce is None else nonce
        signed_at = int(now)
        digest = body_digest(body)
        message = canonical_request(method, target, digest, signed_at, nonce, self.node, to)
        return {
            HEADER_FROM: self.node,
            HEADER_TO: _check_name(to),
            HEADER_TIME: str(signed_at),
            HEADER_NONCE: nonce,
            HEADER_BODY: digest,
            HEADER_SIGNATURE: _mac(self._key, message),
        }

    def check_response(
        self, request: Mapping[str, str], status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Raise :class:`BusAuthError` unless the answer was signed by the node ``request``
        (headers from :meth:`sign`) was sent to, for that very request."""
        lowered = {k.lower(): v for k, v in headers.items()}
        responder = lowered.get(HEADER_FROM.lower())
        signature = lowered.get(HEADER_SIGNATURE.lower())
        if responder is None or signature is None:
            raise BusAuthError(Refusal.MISSING, "the answer is not signed")
        if responder != request[HEADER_TO]:
            raise BusAuthError(Refusal.MISDIRECTED, f"answered by {responder!r}")
        message = canonical_response(
            status, request[HEADER_NONCE], body_digest(body), responder, self.node
        )
        if not hmac.compare_digest(signature, _mac(self._key, message)):
            raise BusAuthError(Refusal.FORGED, "the answer's signature does not match")


class Verifier:
    """Checks requests to this node (``node``) and signs its answers.

    ``members``, if given, returns the names that may send (the cluster's nodes, cached by the
    caller: it is called for every request that passed the signature check). Refusals are
    counted in :attr:`refused` by reason, accepted requests in :attr:`accepted`.
    """

    def __init__(
        self,
        node: str,
        key: bytes,
        *,
        window: float = WINDOW,
        members: Callable[[], Container[str]] | None = None,
        nonces: NonceCache | None = None,
    ) -> None:
        self.node = _check_name(node)
        self.window = window
        self.members = members
        self.nonces = NonceCache(2 * window) if nonces is None else nonces
        self.refused: Counter[Refusal] = Counter()
        self.accepted = 0
        self._key = key

    def _refuse(self, reason: Refusal, detail: str = "") -> BusAuthError:
        self.refused[reason] += 1
        return BusAuthError(reason, detail)

    def check_headers(
        self, method: str, target: str, headers: Mapping[str, str], now: float
    ) -> PendingRequest:
        """Everything that can be checked before reading the body. ``target`` is the path and
        query as received (the raw request target); ``headers`` in any case."""
        lowered = {k.lower(): v for k, v in headers.items()}
        values: list[str] = []
        for name in SIGNED_HEADERS:
            value = lowered.get(name.lower())
            if value is None:
                raise self._refuse(Refusal.MISSING, name)
            values.append(value)
        sender, to, time_text, nonce, digest, signature = values
        for value, shape, name in (
            (sender, _NAME, HEADER_FROM),
            (to, _NAME, HEADER_TO),
            (time_text, _TIME, HEADER_TIME),
            (nonce, _HEX32, HEADER_NONCE),
            (digest, _HEX64, HEADER_BODY),
            (signature, _HEX64, HEADER_SIGNATURE),
            (target, _TARGET, "request target"),
        ):
            if not shape.fullmatch(value):
                raise self._refuse(Refusal.MALFORMED, name)
        if to != self.node:
            raise self._refuse(Refusal.MISDIRECTED, f"for {to!r}, this is {self.node!r}")
        signed_at = int(time_text)
        if abs(now - signed_at) > self.window:
            raise self._refuse(Refusal.STALE, f"signed {now - signed_at:+.0f} s ago")
        message = canonical_request(method, target, digest, signed_at, nonce, sender, to)
        if not hmac.compare_digest(signature, _mac(self._key, message)):
            raise self._refuse(Refusal.FORGED)
        if self.members is not None and sender not in self.members():
            raise self._refuse(Refusal.UNKNOWN_NODE, sender)
        if nonce in self.nonces:
            raise self._refuse(Refusal.REPLAYED)
        if signed_at <= self.nonces.floor:
            raise self._refuse(Refusal.NONCE_OVERFLOW)
        return PendingRequest(method.upper(), target, sender, signed_at, nonce, digest)

    def check_body(self, pending: PendingRequest, body: bytes, now: float) -> SignedRequest:
        """The rest: the body against its signed digest, then the nonce, once and for all.
        Nothing awaits between the two, so two copies of a request cannot both pass."""
        if not hmac.compare_digest(body_digest(body), pending.digest):
            raise self._refuse(Refusal.ALTERED)
        if not self.nonces.add(pending.nonce, pending.signed_at, now):
            raise self._refuse(Refusal.REPLAYED)
        self.accepted += 1
        return SignedRequest(
            pending.method,
            pending.target,
            pending.sender,
            pending.signed_at,
            pending.nonce,
            body,
        )

    def verify(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> SignedRequest:
        """:meth:`check_headers` then :meth:`check_body`, for a body already at hand."""
        return self.check_body(self.check_headers(method, target, headers, now), body, now)

    def sign_response(self, request: SignedRequest, status: int, body: bytes) -> dict[str, str]:
        """The headers that sign our answer to ``request``."""
        message = canonical_response(
            status, request.nonce, body_digest(body), self.node, request.sender
        )
        return {HEADER_FROM: self.node, HEADER_SIGNATURE: _mac(self._key, message)}
