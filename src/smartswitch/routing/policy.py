"""The production call policy: identify the caller, authorise against tariff and balance,
route by the supplier strategy, and rate the finished call into a CDR.

"Every call is billed; a call that cannot be billed is not routed": a caller we cannot
identify gets 403 (or a digest challenge where customers authenticate by password), as does a
customer calling a node it is not attached to (with a Reason saying so), a destination
without a selling rate 404, an account that cannot pay for the first billable
increment 402, a peer over its limits 503; a supplier not attached to this node is skipped
like one over its limits. Everything here reads in-memory views; the call path never waits
on the database.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from smartswitch.b2bua.ports import (
    CallAttempt,
    CallSession,
    CallSummary,
    Destination,
    Rejection,
)
from smartswitch.billing.accounting import Accounting
from smartswitch.billing.rating import max_call_seconds, rate_call
from smartswitch.billing.reservations import ClusterLedger
from smartswitch.model.cdr import CdrAttempt, CdrRecord
from smartswitch.model.config import Account, Peer, Rate, Subscriber
from smartswitch.registrar.guard import SourceGuard, Verdict
from smartswitch.registrar.location import LocationService
from smartswitch.routing.dids import route_did
from smartswitch.routing.limits import CallCounter, RateLimiter
from smartswitch.routing.records import ZERO, CallRecords, CallSink, answered_ms
from smartswitch.routing.selection import order_suppliers, rewrite_number
from smartswitch.routing.subscribers import as_customer
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.digest import DigestAuthenticator, compute_ha1
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Request
from smartswitch.sip.transaction import Address, shared_address
from smartswitch.sip.uri import SipUri, default_port, format_host

log = logging.getLogger("smartswitch.routing")

_AMOUNT_QUANTUM = Decimal("0.0001")


__all__ = ["NOT_SERVED_HERE", "BillingCall", "BillingPolicy", "CallSink", "SupplierChoice"]

# The Reason (RFC 3326) of the 403 to a customer calling a node it is not attached to.
NOT_SERVED_HERE = 'SIP;cause=403;text="customer not served on this node"'


@dataclass(frozen=True, slots=True)
class SupplierChoice:
    """What a destination of a billed call is: the supplier, and what it charges us."""

    peer: Peer
    rate: Rate


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a supplier's calls go: its Request-URI after the user part, and its address."""

    uri_tail: str  # host[:port][;transport=...]
    address: Address

    @classmethod
    def of(cls, address: str, transport: str) -> _Target:
        uri = SipUri.parse(f"sip:{address}")
        transport = transport.lower()
        port = f":{uri.port}" if uri.port else ""
        suffix = f";transport={transport}" if transport != "udp" else ""
        return cls(
            f"{format_host(uri.host)}{port}{suffix}",
            shared_address(transport, uri.host, uri.port or default_port(transport)),
        )


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


class BillingPolicy:
    def __init__(
        self,
        views: ConfigViews,
        accounting: Accounting,
        sink: CallSink,
        authenticator: DigestAuthenticator,
        max_call_duration: float,
        node_name: str,
        wall_offset: Callable[[], float],
        rng: random.Random | None = None,
        reserve_seconds: int = 300,
        location: LocationService | None = None,
        guard: SourceGuard | None = None,
        ledger: ClusterLedger | None = None,
        min_grant_seconds: int = 1,
    ) -> None:
        self.views = views
        self.accounting = accounting
        self.node_name = node_name  # this node: which peers it serves and uses
        self.records = CallRecords(sink, node_name, wall_offset)
        self.auth = authenticator
        self.max_call_duration = max_call_duration
        self.reserve_seconds = reserve_seconds  # the slice of accounts without their own
        # A new call that cannot get a whole slice gets what is left, but not less than this:
        # calls that would be cut within seconds are refused instead.
        self.min_grant_seconds = min_grant_seconds
        # In a cluster, what the other nodes hold of each account (billing.reservations).
        self.ledger = ledger
        self.wall_offset = wall_offset
        self.rng = rng or random.Random()
        self.customer_calls = CallCounter()
        self.supplier_calls = CallCounter()
        self.cps = RateLimiter()
        self.supplier_cps = RateLimiter()
        self._ha1: dict[tuple[str, str, str, str], str] = {}
        # A supplier's address as the call path sends to it, by (address, transport): parsed
        # once per configuration rather than once per destination of every call.
        self._targets: dict[tuple[str, str], _Target] = {}
        # The registrar's: where DID calls to subscribers go, and the defence against guessing
        # that REGISTER and INVITE authentication share (one count per source address).
        self.location = location
        self.guard = guard
        # The transport's: the verified client certificate's fingerprint of a TLS source
        # (mutual TLS), None for any other source. Set by the node once it listens on TLS.
        self.certificate_of: Callable[[Address], str | None] | None = None

    def update(self, views: ConfigViews) -> None:
        """A new configuration: calls in progress keep the values they started with."""
        self.views = views
        self._targets = {}
        self.accounting.load_limits(views.snapshot.accounts)

    def available(self, account_id: int, now: float) -> Decimal:
        """What may still be granted of the account: on a cluster node, less what every node
        holds of it (and within this node's share during a partition)."""
        if self.ledger is not None:
            return self.ledger.available(account_id, now)
        return self.accounting.available(account_id)

    def contenders(self, account_id: int, now: float) -> int:
        """The nodes that may be granting the account's calls more time at this moment: this
        one and the live ones holding reservations of it (1 on a single node)."""
        if self.ledger is not None:
            return self.ledger.contenders(account_id, now)
        return 1

    # --- identification -------------------------------------------------------------------------

    def known_source(self, transport: str, host: str, port: int) -> bool:
        """Whether requests from this source are a known peer's before any password is
        checked: a customer's or a DID provider's ACL, a supplier's address, a customer's TLS
        certificate. The flood gate (smartswitch.sip.flood) holds everyone else to a rate and
        to the bytes they sent."""
        views = self.views
        if views.acl.match(host, port) is not None or views.did_acl.match(host, port):
            return True
        if host in views.peer_hosts:
            return True
        if transport == "tls" and self.certificate_of is not None and views.certificates:
            certificate = self.certificate_of(Address(transport, host, port))
            return certificate is not None and certificate in views.certificates
        return False

    def _lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        peer = self.views.credential_peers.get(username)
        if peer is None or peer.password is None:
            # Subscribers keep HA1 only, made for the realm they were provisioned in.
            subscriber = self.views.subscribers.get(username)
            if subscriber is None or not subscriber.enabled or subscriber.realm != realm:
                return None
            return subscriber.ha1_sha256 if algorithm == "SHA-256" else subscriber.ha1_md5
        key = (username, realm, algorithm, peer.password)
        ha1 = self._ha1.get(key)
        if ha1 is None:
            ha1 = self._ha1[key] = compute_ha1(username, realm, peer.password, algorithm)
        return ha1

    def identify(
        self, request: Request, source: Address, now: float
    ) -> Peer | Subscriber | Rejection:
        views = self.views
        certificate = None
        if source.transport == "tls" and self.certificate_of is not None:
            certificate = self.certificate_of(source)
            if certificate is not None:
                by_certificate = views.certificates.get(certificate)
                if by_certificate is not None:
                    return by_certificate
        peer = views.acl.match(source.host, source.port)
        if peer is not None:
            if peer.tls_fingerprint is not None and peer.tls_fingerprint != certificate:
                # A peer known by its certificate: its address alone is not enough.
                log.info(
                    "call %s: %s needs its TLS certificate (source %s)",
                    request.call_id,
                    peer.name,
                    source.host,
                )
                return Rejection(403, "Forbidden (certificate required)")
            return peer
        if not views.credential_peers and not views.subscribers:
            return Rejection(403, "Forbidden")
        wall = now + self.wall_offset()
        guard = self.guard
        if guard is not None:
            # Before any digest work: a banned or flooding source costs us nothing more.
            verdict = guard.check(source.host, wall)
            if verdict is Verdict.BANNED:
                return Rejection(403, "Forbidden")
            if verdict is Verdict.THROTTLED:
                retry = str(guard.retry_after(source.host, wall))
                return Rejection(503, "Service Unavailable", (("Retry-After", retry),))
        credentials = request.headers.get("proxy-authorization")
        if credentials is None:
            return self._challenge(wall, stale=False)
        if guard is not None and not guard.admit(source.host, credentials, wall):
            return Rejection(403, "Forbidden")  # its account in back-off: refused unchecked
        result = self.auth.verify(request.method, credentials, self._lookup_ha1, wall)
        if result.stale:
            return self._challenge(wall, stale=True)
        if not result.ok or result.username is None or not _same_uri(result.uri, request.uri):
            # The digest covers the uri parameter, not the Request-URI: credentials made for
            # another Request-URI (a captured INVITE's, replayed to a dearer destination) are
            # refused (RFC 3261 22.4).
            log.info("call %s: authentication failed from %s", request.call_id, source.host)
            if guard is not None and guard.failed(source.host, wall, result):
                log.info("source %s banned after repeated failed authentications", source.host)
            return Rejection(403, "Forbidden")
        if guard is not None:
            guard.succeeded(source.host, result.username, wall)
        peer = views.credential_peers.get(result.username)
        if peer is not None:
            return peer
        subscriber = views.subscribers.get(result.username)
        if subscriber is None:
            return Rejection(403, "Forbidden")
        if not subscriber.allows_source(source.host):
            return Rejection(403, "Forbidden (source address not allowed)")
        return subscriber

    def _challenge(self, wall: float, stale: bool) -> Rejection:
        headers = tuple(("Proxy-Authenticate", c) for c in self.auth.challenge(wall, stale=stale))
        return Rejection(407, "Proxy Authentication Required", headers)

    # --- authorisation and routing -------------------------------------------------------------

    def route(self, request: Request, source: Address, now: float) -> CallSession | Rejection:
        if self.views.dids:
            did_call = route_did(
                self.views,
                self.location,
                request,
                source,
                now,
                self.max_call_duration,
                self.records,
            )
            if did_call is not None:
                return did_call
        found = self.identify(request, source, now)
        if isinstance(found, Rejection):
            return found
        subscriber: Subscriber | None = None
        if isinstance(found, Subscriber):
            subscriber = found
            customer = as_customer(found)
        else:
            customer = found
        if not customer.enabled:
            return Rejection(403, "Forbidden (peer disabled)")
        if not customer.attached(self.node_name):
            # Manual load balancing: a customer is served by the nodes it is attached to only.
            return Rejection(403, "Forbidden", (("Reason", NOT_SERVED_HERE),))
        views = self.views
        account = views.snapshot.accounts.get(customer.account_id)
        tariff = views.tariffs.get(customer.tariff_id) if customer.tariff_id is not None else None
        if account is None or tariff is None:
            return Rejection(403, "Forbidden (customer without account or tariff)")
        if (
            customer.max_calls is not None
            and self.customer_calls.get(customer.id) >= customer.max_calls
        ):
            return _busy("concurrent call limit reached")
        if customer.max_cps is not None and not self.cps.allow(customer.id, customer.max_cps, now):
            return _busy("call rate limit reached")

        caller_in = request.from_.sip_uri().user or "anonymous"
        if subscriber is not None and subscriber.caller_id:
            caller_in = subscriber.caller_id  # what it may present, not what its phone says
        callee_in = request.sip_uri.user or ""
        callee = rewrite_number(callee_in, customer.callee_rewrite)
        caller = rewrite_number(caller_in, customer.caller_rewrite)
        number = _digits(callee)
        wall = self.records.wall(now)
        rate = tariff.lookup(number, wall)
        if rate is None:
            return Rejection(404, "Not Found (no rate for this destination)")
        slice_seconds = account.reserve_seconds or self.reserve_seconds
        seconds = max_call_seconds(self.available(account.id, now), rate)
        if seconds is None or seconds < min(self.min_grant_seconds, slice_seconds):
            return Rejection(402, "Payment Required (insufficient balance)")
        seconds = min(seconds, int(self.max_call_duration), slice_seconds)
        route = views.routes.lookup(number)
        if route is None:
            return Rejection(404, "Not Found (no route for this destination)")

        def buying_rate(peer: Peer) -> Rate | None:
            index = views.tariffs.get(peer.tariff_id) if peer.tariff_id is not None else None
            return index.lookup(number, wall) if index is not None else None

        candidates = order_suppliers(
            route, views.snapshot.peers, buying_rate, rate, customer.profit_control, self.rng
        )
        destinations: list[Destination] = []
        suppliers: list[SupplierChoice] = []
        for candidate in candidates:
            supplier = candidate.peer
            if supplier.address is None or not supplier.attached(self.node_name):
                continue  # a supplier is used only from the nodes it is attached to
            if (
                supplier.max_calls is not None
                and self.supplier_calls.get(supplier.id) >= supplier.max_calls
            ):
                continue
            if supplier.max_cps is not None and not self.supplier_cps.available(
                supplier.id, supplier.max_cps, now
            ):
                continue  # over its rate now: the next supplier takes the call
            destinations.append(self._destination(supplier, caller, callee, customer, account))
            suppliers.append(SupplierChoice(supplier, candidate.rate))
        if not destinations:
            return _busy("no supplier available for this destination")
        first = suppliers[0].peer
        if first.max_cps is not None:
            # The first choice gets the call now; a failover later is not counted against
            # the next supplier's rate (the policy hears of attempts only at the call's end).
            self.supplier_cps.allow(first.id, first.max_cps, now)

        reserved = rate_call(rate, seconds * 1000, answered=True).amount
        self.accounting.reserve(account.id, reserved)
        self.customer_calls.add(customer.id)
        return BillingCall(
            policy=self,
            destinations=tuple(destinations),
            suppliers=tuple(suppliers),
            customer=customer,
            account_id=account.id,
            currency=account.currency,
            rate=rate,
            reserved=reserved,
            max_seconds=seconds,
            slice_seconds=slice_seconds,
            caller=caller_in,
            callee=callee_in,
            subscriber_id=subscriber.id if subscriber is not None else None,
        )

    def _destination(
        self, supplier: Peer, caller: str, callee: str, customer: Peer, account: Account
    ) -> Destination:
        key = (supplier.address or "", supplier.transport)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _Target.of(*key)
        callee_out = rewrite_number(callee, supplier.callee_rewrite)
        caller_out = rewrite_number(caller, supplier.caller_rewrite)
        return Destination(
            uri=f"sip:{callee_out}@{target.uri_tail}",
            address=target.address,
            callee=callee_out,
            caller=caller_out,
            label=supplier.name,
            # Relayed if either party wants it; the codecs both allow reach the supplier;
            # recorded if either peer or the customer's account asks.
            media=customer.media.combine(supplier.media).recorded(account.record),
        )


@dataclass(slots=True, eq=False)
class BillingCall:
    """A billed call, from its routing to its CDR: the :class:`CallSession` of the billing
    policy. It holds what the call has reserved of the customer's money and the time that
    buys, both growing slice by slice (:meth:`extend`)."""

    policy: BillingPolicy
    destinations: tuple[Destination, ...]
    suppliers: tuple[SupplierChoice, ...]  # what each destination is, in the same order
    customer: Peer
    account_id: int
    currency: str
    rate: Rate  # the selling rate, fixed for the call's life
    reserved: Decimal
    max_seconds: int  # answered time granted so far
    slice_seconds: int  # granted at a time (the account's, else the node's)
    caller: str  # as received
    callee: str
    subscriber_id: int | None = None  # a subscriber calling out (customer is its stand-in)
    supplier_answered: int | None = None

    @property
    def fork(self) -> bool:
        return False  # suppliers are tried one after the other

    @property
    def max_duration(self) -> float:
        return float(self.max_seconds)

    def answered(self, attempt: CallAttempt) -> None:
        supplier = self.suppliers[attempt.index].peer
        self.supplier_answered = supplier.id
        self.policy.supplier_calls.add(supplier.id)

    def extend(self, now: float) -> float:
        """Reserve the next slice of the call's time, as far as the balance goes (what is left,
        however little: the call is already up, and its money is the customer's to use)."""
        policy = self.policy
        accounting = policy.accounting
        available = policy.available(self.account_id, now)
        contenders = policy.contenders(self.account_id, now)
        if contenders > 1 and available > 0:
            # Calls of this account on other nodes may be extending at this same moment on
            # what they too see left (calls started together reach their slice ends
            # together): take at most an equal part of it, but at least one billing block,
            # so that together they take no more than is left plus one block each.
            part = (available / contenders).quantize(_AMOUNT_QUANTUM, rounding=ROUND_FLOOR)
            block = rate_call(self.rate, (self.max_seconds + 1) * 1000, answered=True).amount
            available = min(available, max(part, block - self.reserved))
        usable = available + self.reserved
        limit = min(int(policy.max_call_duration), self.max_seconds + self.slice_seconds)
        total = max_call_seconds(usable, self.rate)
        if total is None or total <= self.max_seconds:
            return 0.0
        total = min(total, limit)
        if total <= self.max_seconds:
            return 0.0
        reserved = rate_call(self.rate, total * 1000, answered=True).amount
        accounting.reserve(self.account_id, reserved - self.reserved)
        granted = total - self.max_seconds
        self.reserved = reserved
        self.max_seconds = total
        return float(granted)

    def ended(self, summary: CallSummary, done: Callable[[], None]) -> None:
        """Release the reservation and the limits, rate the call, charge it, keep its CDR."""
        policy = self.policy
        accounting = policy.accounting
        accounting.release(self.account_id, self.reserved)
        policy.customer_calls.remove(self.customer.id)
        if self.supplier_answered is not None:
            policy.supplier_calls.remove(self.supplier_answered)
        record = self.record(summary)
        accounting.charge(record.id, record.charges())
        policy.records.keep(record, done)

    def record(self, summary: CallSummary) -> CdrRecord:
        """The call rated: the customer pays the selling rate, we owe the answering supplier
        its buying rate, for the same answered duration."""
        records = self.policy.records
        answered = summary.answer_time is not None
        # The switch cuts the call at max_seconds; the timer firing a few ms late must not
        # bill one more increment than was reserved.
        duration_ms = min(answered_ms(summary), self.max_seconds * 1000)
        price = rate_call(self.rate, duration_ms, answered=answered)
        supplier: Peer | None = None
        cost = ZERO
        if summary.answered is not None:
            choice = self.suppliers[summary.answered.index]
            supplier = choice.peer
            cost = rate_call(choice.rate, duration_ms, answered=answered).amount
        attempts = tuple(
            CdrAttempt(
                seq=n,
                supplier_peer_id=self.suppliers[a.index].peer.id,
                sip_code=a.status,
                reason=a.reason,
                start_time=records.wall(a.started),
                end_time=records.wall(a.ended),
            )
            for n, a in enumerate(summary.attempts, 1)
        )
        return records.cdr(
            summary,
            customer_peer_id=self.customer.id if self.subscriber_id is None else 0,
            customer_account_id=self.account_id,
            subscriber_id=self.subscriber_id,
            caller=self.caller,
            callee=self.callee,
            callee_out=self.callee,
            currency=self.currency,
            duration_ms=duration_ms,
            billed_seconds=price.billed_seconds,
            price=price.amount,
            cost=cost,
            supplier_peer_id=supplier.id if supplier else None,
            supplier_account_id=supplier.account_id if supplier else None,
            attempts=attempts,
        )


def _same_uri(credential_uri: str | None, request_uri: str) -> bool:
    """The digest ``uri`` names the Request-URI: equal as text, or as SIP URIs (scheme,
    user, host case-insensitively, port)."""
    if credential_uri is None:
        return False
    if credential_uri == request_uri:
        return True
    try:
        a, b = SipUri.parse(credential_uri), SipUri.parse(request_uri)
    except SipParseError:
        return False
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(), b.port)


def _busy(text: str) -> Rejection:
    return Rejection(503, "Service Unavailable", (("Reason", f'SIP;cause=503;text="{text}"'),))
