"""REGISTER processing (RFC 3261 section 10.3), sans-IO.

:meth:`Registrar.handle` takes a parsed REGISTER, where it came from and the wall-clock time,
updates the :class:`~smartswitch.registrar.location.LocationService` and returns the response
to send; the caller (the node's glue, or a test) sends it in the request's server transaction.

Theory of operation, in the order of RFC 3261 10.3 (step numbers in the comments):

1. The source guard first (:mod:`smartswitch.registrar.guard`): a banned address gets 403 and
   a flooding one 503, before any digest work.
2. Authentication by digest (RFC 3261 22, RFC 7616, RFC 8760): no credentials, a 401 with one
   WWW-Authenticate per algorithm; credentials that fail, whether the user is unknown or the
   password wrong, one and the same 403 (nothing tells an attacker which usernames exist) and a
   failure counted against the source; a right digest on an expired or replayed nonce, a new
   401 with ``stale=true``.
3. Authorisation: the authenticated user may only bind its own address-of-record (the user
   part of the To URI), from an allowed source network (the subscriber's ``allowed_cidrs``).
4. The contacts: ``*`` only alone and with ``Expires: 0``; each contact's expiry from its
   ``expires`` parameter, else the Expires header, else the default; below the minimum (and
   not 0) the whole request is refused with 423 and Min-Expires; above the maximum it is cut
   to the maximum. A binding of the same Call-ID is updated only by a higher CSeq (else 400
   "Invalid CSeq number", nothing changed). A request that would leave more than the
   subscriber's ``max_contacts`` live bindings is refused (403), nothing changed.
5. The 200 lists every live binding of the AOR with its remaining time (step 8).

All or nothing: every check runs before the location service is touched.

The AOR is the subscriber's username alone; the host part of the To URI is not compared (one
domain per switch, the digest realm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate

from smartswitch.model.config import Subscriber
from smartswitch.registrar.guard import SourceGuard, Verdict
from smartswitch.registrar.location import LOCAL, Binding, LocationService, contact_key
from smartswitch.sip.digest import DigestAuthenticator, DigestParseError, parse_auth_params
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.grammar import is_digits
from smartswitch.sip.message import Request, Response, make_response
from smartswitch.sip.transaction import Address
from smartswitch.sip.uri import NameAddr, SipUri

__all__ = ["Registrar", "RegistrarSettings"]

log = logging.getLogger("smartswitch.registrar")

# RFC 3261 20.19: an Expires value is 0 to 2**32-1 seconds; malformed means 3600.
_MAX_DELTA = 2**32 - 1


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    min_expires: int = 60
    """Shorter non-zero registrations get 423 Interval Too Brief (RFC 3261 10.3 step 7)."""
    max_expires: int = 3600
    """Longer ones are granted this much (the 200 says so, RFC 3261 10.3 step 8)."""
    default_expires: int = 3600
    """For a contact with neither an ``expires`` parameter nor an Expires header."""
    node: str = ""


@dataclass(slots=True)
class _Contact:
    uri: str
    key: str
    expires: int
    q: float | None


class Registrar:
    """The registrar of one realm: subscribers from the configuration, bindings in ``location``.

    ``tag`` makes the To tag of each response (the transaction layer's id generator).
    """

    def __init__(
        self,
        location: LocationService,
        authenticator: DigestAuthenticator,
        guard: SourceGuard,
        settings: RegistrarSettings | None = None,
        tag: Callable[[], str] | None = None,
    ) -> None:
        self.location = location
        self.auth = authenticator
        self.guard = guard
        self.settings = settings or RegistrarSettings()
        self.subscribers: Mapping[str, Subscriber] = {}
        self.tag = tag if tag is not None else _counter()
        self.stats = {"registered": 0, "challenged": 0, "refused": 0, "throttled": 0}

    def update(self, subscribers: Mapping[str, Subscriber]) -> None:
        """New configuration: subscribers by username. Bindings are left as they are (a
        disabled subscriber's phones can no longer refresh, so they go when they expire)."""
        self.subscribers = subscribers

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """The stored HA1 for the digest check; None for an unknown or disabled subscriber, or
        one provisioned for another realm (its HA1 would never match)."""
        subscriber = self.subscribers.get(username)
        if subscriber is None or not subscriber.enabled or subscriber.realm != realm:
            return None
        return subscriber.ha1_sha256 if algorithm == "SHA-256" else subscriber.ha1_md5

    # --- the request ---------------------------------------------------------------------------

    def handle(self, request: Request, source: Address, now: float) -> Response:
        """Process one REGISTER received from ``source`` at wall-clock ``now``."""
        verdict = self.guard.check(source.host, now)
        if verdict is Verdict.BANNED:
            return self._forbidden(request)
        if verdict is Verdict.THROTTLED:
            self.stats["throttled"] += 1
            response = self._response(request, 503, "Service Unavailable")
            response.headers.add("Retry-After", str(self.guard.retry_after(source.host, now)))
            return response
        try:
            return self._handle(request, source, now)
        except SipParseError as exc:
            # A header parsed on demand (To, Contact, the Request-URI) is malformed.
            reason = f"Bad Request ({exc.reason})" if exc.status == 400 else exc.reason
            return self._response(request, exc.status, reason.replace("\r", " ").replace("\n", " "))

    def _handle(self, request: Request, source: Address, now: float) -> Response:
        request.sip_uri  # noqa: B018 - 416 for a Request-URI that is not sip/sips (10.3 step 1)
        to_uri = request.to.sip_uri()
        aor = to_uri.user
        if not aor:
            return self._response(request, 400, "Bad Request (To URI without a user part)")

        # Step 2: authenticate.
        credentials = self._credentials(request)
        if credentials is None:
            return self._challenge(request, now, stale=False)
        if not self.guard.admit(source.host, credentials, now):
            return self._forbidden(request)  # its account in back-off: refused unchecked
        result = self.auth.verify("REGISTER", credentials, self.lookup_ha1, now)
        if result.stale:
            return self._challenge(request, now, stale=True)
        if not result.ok or result.username is None or not _same_uri(result.uri, request.uri):
            banned = self.guard.failed(source.host, now, result)
            log.debug("REGISTER from %s refused: %s", source.host, result.reason)
            if banned:
                log.info(
                    "source %s banned for %.0f s after repeated failed authentications",
                    source.host,
                    self.guard.settings.ban_time,
                )
            return self._forbidden(request)
        self.guard.succeeded(source.host, result.username, now)

        # Step 3: authorise. The user is genuine from here on, so precise answers reveal nothing.
        subscriber = self.subscribers.get(result.username)
        if subscriber is None or not subscriber.enabled:
            return self._forbidden(request)
        if result.username != aor:
            self.stats["refused"] += 1
            return self._response(request, 403, "Forbidden (not your address-of-record)")
        if not subscriber.allows_source(source.host):
            self.stats["refused"] += 1
            return self._response(request, 403, "Forbidden (source address not allowed)")

        # Steps 4-7: the contacts.
        values = request.headers.get_all("contact")
        if not values:
            return self._ok(request, aor, now)  # a query: the current bindings (10.2.3)
        header_expires = _expires_header(request, self.settings.default_expires)
        if any(v.strip() == "*" for v in values):
            return self._remove_all(request, aor, values, header_expires, now)
        contacts = self._contacts(values, header_expires)
        if isinstance(contacts, Response):
            return contacts
        too_brief = [c for c in contacts if 0 < c.expires < self.settings.min_expires]
        if too_brief:
            response = self._response(request, 423, "Interval Too Brief")
            response.headers.add("Min-Expires", str(self.settings.min_expires))
            return response

        location = self.location
        call_id = request.call_id
        cseq = request.cseq.number
        for contact in contacts:
            existing = location.get(aor, contact.key)
            if (
                existing is not None
                and existing.expires_at > now
                and existing.call_id == call_id
                and cseq <= existing.cseq
            ):
                # Step 7: an older or repeated request of the same UA must not undo a newer one.
                return self._response(request, 400, "Invalid CSeq number")
        live = {b.key for b in location.lookup(aor, now)}
        after = set(live)
        for contact in contacts:
            if contact.expires == 0:
                after.discard(contact.key)
            else:
                after.add(contact.key)
        if len(after - live) > 0 and len(after) > subscriber.max_contacts:
            self.stats["refused"] += 1
            return self._response(request, 403, "Forbidden (too many contacts)")

        user_agent = request.headers.get("user-agent") or ""
        for contact in contacts:
            if contact.expires == 0:
                location.remove(aor, contact.key, LOCAL)
                continue
            location.apply(
                Binding(
                    aor=aor,
                    contact=contact.uri,
                    expires_at=now + contact.expires,
                    call_id=call_id,
                    cseq=cseq,
                    source=source,
                    registered_at=now,
                    user_agent=user_agent[:255],
                    q=contact.q,
                    node=self.settings.node,
                ),
                LOCAL,
            )
        self.stats["registered"] += 1
        return self._ok(request, aor, now)

    def _contacts(self, values: list[str], header_expires: int) -> list[_Contact] | Response:
        settings = self.settings
        contacts: dict[str, _Contact] = {}
        for value in values:
            addr = NameAddr.parse(value)
            try:
                key = contact_key(addr.uri)
            except SipParseError:
                raise SipParseError(f"Contact is not a sip: URI: {addr.uri[:60]!r}") from None
            expires = _delta(addr.params.get("expires"), header_expires)
            if expires > settings.max_expires:
                expires = settings.max_expires
            q = _q(addr.params.get("q"))
            # The same contact twice in one request: the last one counts.
            contacts[key] = _Contact(addr.uri, key, expires, q)
        return list(contacts.values())

    def _remove_all(
        self, request: Request, aor: str, values: list[str], header_expires: int, now: float
    ) -> Response:
        # Step 6: "*" only alone, and only with Expires: 0.
        if len(values) != 1 or request.headers.get("expires") is None or header_expires != 0:
            return self._response(request, 400, 'Bad Request ("*" needs Expires: 0, alone)')
        call_id = request.call_id
        cseq = request.cseq.number
        bindings = self.location.lookup(aor, now)
        for binding in bindings:
            if binding.call_id == call_id and cseq <= binding.cseq:
                return self._response(request, 400, "Invalid CSeq number")
        for binding in bindings:
            self.location.remove(aor, binding.key, LOCAL)
        self.stats["registered"] += 1
        return self._ok(request, aor, now)

    # --- answers -------------------------------------------------------------------------------

    def _credentials(self, request: Request) -> str | None:
        lines = request.headers.get_lines("authorization")
        if len(lines) <= 1:
            return lines[0] if lines else None
        # Credentials for several realms may coexist (RFC 3261 22.4): take ours if there.
        realm = self.auth.realm
        return next((line for line in lines if _realm_of(line) == realm), lines[0])

    def _response(self, request: Request, status: int, reason: str | None = None) -> Response:
        return make_response(request, status, reason, self.tag())

    def _forbidden(self, request: Request) -> Response:
        """The one answer to every failed authentication: nothing in it depends on why."""
        self.stats["refused"] += 1
        return self._response(request, 403, "Forbidden")

    def _challenge(self, request: Request, now: float, stale: bool) -> Response:
        self.stats["challenged"] += 1
        response = self._response(request, 401, "Unauthorized")
        for value in self.auth.challenge(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response

    def _ok(self, request: Request, aor: str, now: float) -> Response:
        response = self._response(request, 200, "OK")
        headers = response.headers
        for binding in self.location.lookup(aor, now):
            q = f";q={binding.q:g}" if binding.q is not None else ""
            headers.add("Contact", f"<{binding.contact}>;expires={binding.expires_in(now)}{q}")
        headers.add("Date", formatdate(now, usegmt=True))  # step 8: SHOULD include Date
        return response


def _counter() -> Callable[[], str]:
    n = 0

    def tag() -> str:
        nonlocal n
        n += 1
        return f"r{n:x}"

    return tag


def _delta(text: str | None, default: int) -> int:
    """A delta-seconds value (RFC 3261 20.19, 20.10); malformed or absent means ``default``."""
    if text is None:
        return default
    text = text.strip()
    if not is_digits(text, 20):
        return default
    return min(int(text), _MAX_DELTA)


def _expires_header(request: Request, default: int) -> int:
    return _delta(request.headers.get("expires"), default)


def _q(text: str | None) -> float | None:
    """The q parameter (RFC 3261 20.10: 0 to 1, at most three decimals)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SipParseError(f"bad q parameter {text[:20]!r}") from None
    if not 0.0 <= value <= 1.0:
        raise SipParseError(f"q parameter out of range {text[:20]!r}")
    return value


def _realm_of(value: str) -> str | None:
    try:
        return parse_auth_params(value)[1].get("realm")
    except DigestParseError:
        return None


def _same_uri(credential_uri: str | None, request_uri: str) -> bool:
    """The digest ``uri`` names the Request-URI (RFC 3261 22.4: the credentials are for this
    request); compared as SIP URIs (scheme, user, host case-insensitively, port)."""
    if credential_uri is None:
        return False
    if credential_uri == request_uri:
        return True
    try:
        a, b = SipUri.parse(credential_uri), SipUri.parse(request_uri)
    except SipParseError:
        return False
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(), b.port)
