"""Registering the switch with suppliers that demand it (RFC 3261 10.2), kept alive.

Sans-IO in the way the B2BUA is: an :class:`OutboundClient` sends through the transaction layer
(``layer.send_request(..., owner=self)``); it owns those transactions (a
:class:`~smartswitch.sip.transaction.ClientOwner`), so their answers come back to its
:meth:`~OutboundClient.on_response` / :meth:`~OutboundClient.on_timeout`. Its timers are in
the layer's :class:`~smartswitch.sip.timers.TimerHeap`. Nothing here touches a socket or a
clock: every entry point takes ``now``; :meth:`OutboundClient.start`,
:meth:`OutboundClient.stop` and :meth:`OutboundRegistrations.reconcile` run outside any network
or timer callback, so their caller flushes the transport afterwards.

The life of one registration::

    start -> REGISTERING -(2xx)-> REGISTERED -(refresh timer)-> REGISTER again -(2xx)-> ...
                 |  401/407: answer the challenge once (RFC 3261 22.2), keep it for the
                 |           refreshes (nc counts up, RFC 7616 3.4); a challenge right after
                 |           fresh credentials, not stale, means they were refused
                 |  423: ask again for the Min-Expires it names (10.2.8)
                 |  other 3xx-6xx, a timeout: FAILED, retry after a back-off that doubles
                 v           (retry_min .. retry_max), or after Retry-After if longer
    stop -> UNREGISTERING (Expires: 0) -> STOPPED

Refresh: ``granted - min(30, granted / 2)`` seconds after a 2xx, ``granted`` being what the
registrar said (our Contact's ``expires``, else Expires, else what we asked): 30 s before the
end for usual lengths, half-way for short ones. One Call-ID for the client's life and a CSeq
that only goes up (RFC 3261 10.2.4), so the registrar sees refreshes, not new bindings.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from smartswitch.model.config import Peer
from smartswitch.registrar.location import contact_key
from smartswitch.sip.digest import (
    DigestError,
    build_authorization,
    parse_auth_params,
    select_challenge,
)
from smartswitch.sip.errors import SipParseError
from smartswitch.sip.grammar import is_digits
from smartswitch.sip.message import Headers, Request, Response
from smartswitch.sip.timers import Timer
from smartswitch.sip.transaction import Address, ClientTransaction, TransactionLayer
from smartswitch.sip.uri import default_port, format_host

__all__ = [
    "OutboundClient",
    "OutboundRegistrations",
    "OutboundState",
    "OutboundStatus",
    "OutboundTarget",
    "refresh_delay",
]

log = logging.getLogger("smartswitch.registrar.outbound")

MAX_EXPIRES = 86_400  # a Min-Expires above this is not a registrar we can work with


class OutboundState(enum.StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # waiting to retry
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class OutboundTarget:
    """Where and as whom to register: from a supplier peer's ``register`` block."""

    peer_id: int
    peer: str
    username: str
    password: str = field(repr=False)
    domain: str
    """The registrar as written ("host" or "host:port"): Request-URI, From and To host."""
    address: Address
    expires: int

    @classmethod
    def of(cls, peer: Peer, node: str) -> OutboundTarget | None:
        """What ``node`` registers as with ``peer``: its own account, else the default one;
        None when the peer wants no registration, is not attached to ``node`` (the node does
        not use it), or has no account for it."""
        spec = peer.register
        if spec is None or not peer.attached(node):
            return None
        account = spec.account(node)
        if account is None:
            return None
        username, password = account
        host, port = _hostport(spec.registrar)
        transport = peer.transport.lower()
        domain = format_host(host) + (f":{port}" if port else "")
        return cls(
            peer_id=peer.id,
            peer=peer.name,
            username=username,
            password=password,
            domain=domain,
            address=Address(transport, host, port or default_port(transport)),
            expires=spec.expires,
        )


@dataclass(frozen=True, slots=True)
class OutboundStatus:
    """What ``smartswitch registrations --outbound`` shows of one client. Times are seconds
    from now; never the password."""

    peer: str
    username: str
    registrar: str
    transport: str
    state: str
    expires: int  # what we ask for
    registered_for: float | None  # seconds the registration still holds (None: not registered)
    next_action_in: float | None  # the refresh or the retry
    failures: int  # consecutive
    last_status: int | None
    last_reason: str


def refresh_delay(granted: int) -> float:
    """Seconds after a 2xx to refresh a registration granted for ``granted`` seconds."""
    return granted - min(30.0, granted / 2)


class OutboundClient:
    """One registration with one supplier."""

    def __init__(
        self,
        target: OutboundTarget,
        layer: TransactionLayer,
        *,
        retry_min: float = 5.0,
        retry_max: float = 300.0,
        user_agent: str = "smartswitch",
    ) -> None:
        self.target = target
        self.layer = layer
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.user_agent = user_agent
        self.state = OutboundState.STOPPED
        self.call_id = f"{layer.ids.next()}@smartswitch"
        self.from_tag = layer.ids.next()
        self.cseq = 0
        self.expires = target.expires
        self.failures = 0
        self.last_status: int | None = None
        self.last_reason = ""
        self.registered_until: float | None = None
        self.next_action_at: float | None = None
        self._tx: ClientTransaction | None = None
        self._timer: Timer | None = None
        # The challenge our credentials answer: (header to send, challenge value), and the nc
        # used with its nonce so far.
        self._challenge: tuple[str, str] | None = None
        self._nc = 0
        # Whether the request out answers a challenge received just before it (then another
        # challenge means "wrong password"), and whether the next one will.
        self._fresh_credentials = False
        self._answering = False

    @property
    def contact(self) -> str:
        # The address the REGISTERs leave from (the node's originating one): the supplier
        # sends its calls to the address it sees registered.
        transport = self.target.address.transport
        host, port = self.layer.local_address(self.target.address)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{self.target.username}@{format_host(host)}:{port}{suffix}"

    # --- control -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Register now."""
        self.state = OutboundState.REGISTERING
        self.failures = 0
        self._send(now)

    def stop(self, now: float, unregister: bool = True) -> None:
        """Stop refreshing; with ``unregister``, remove the binding (Expires: 0) if we hold one."""
        self._cancel_timer()
        self.next_action_at = None
        registered = self.registered_until is not None and self.registered_until > now
        if unregister and registered:
            self.state = OutboundState.UNREGISTERING
            self._send(now, expires=0)
        else:
            self.state = OutboundState.STOPPED
            self._tx = None
        self.registered_until = None

    # --- sending -------------------------------------------------------------------------------

    def _request(self, expires: int) -> Request:
        target = self.target
        self.cseq += 1
        aor = f"<sip:{target.username}@{target.domain}>"
        headers = Headers()
        items = headers._items
        items.append(("max-forwards", "Max-Forwards", "70"))
        items.append(("from", "From", f"{aor};tag={self.from_tag}"))
        items.append(("to", "To", aor))
        items.append(("call-id", "Call-ID", self.call_id))
        items.append(("cseq", "CSeq", f"{self.cseq} REGISTER"))
        items.append(("contact", "Contact", f"<{self.contact}>"))
        items.append(("expires", "Expires", str(expires)))
        items.append(("user-agent", "User-Agent", self.user_agent))
        return Request("REGISTER", f"sip:{target.domain}", headers)

    def _send(self, now: float, expires: int | None = None) -> None:
        self._cancel_timer()
        self.next_action_at = None
        request = self._request(self.expires if expires is None else expires)
        self._fresh_credentials = self._answering and self._challenge is not None
        self._answering = False
        if self._challenge is not None:
            header, challenge = self._challenge
            self._nc += 1
            try:
                value = build_authorization(
                    challenge,
                    "REGISTER",
                    request.uri,
                    self.target.username,
                    self.target.password,
                    self._nc,
                )
            except (DigestError, ValueError) as exc:
                self._challenge = None
                self._fail(f"cannot answer the challenge: {exc}", now)
                return
            request.headers.add(header, value)
        self._tx = self.layer.send_request(request, self.target.address, now, owner=self)

    # --- answers -------------------------------------------------------------------------------

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if tx is not self._tx or response.status < 200:
            return  # a provisional answer, or the answer to a request we gave up on
        self._tx = None
        status = response.status
        self.last_status = status
        self.last_reason = response.reason
        if self.state is OutboundState.UNREGISTERING:
            if status in (401, 407) and self._answer(response):
                self._send(now, expires=0)
                return
            self.state = OutboundState.STOPPED
            return
        if self.state is OutboundState.STOPPED:
            return
        if 200 <= status < 300:
            self._registered(response, now)
        elif status in (401, 407):
            if self._answer(response):
                self._send(now)
            else:
                self._challenge = None  # the next attempt starts afresh, unauthenticated
                self._fail(f"{status} {response.reason}: credentials refused", now)
        elif status == 423:
            self._too_brief(response, now)
        else:
            self._fail(f"{status} {response.reason}", now, _retry_after(response))

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx is not self._tx:
            return
        self._tx = None
        self.last_status = 408
        self.last_reason = "no answer"
        if self.state is OutboundState.UNREGISTERING:
            self.state = OutboundState.STOPPED
            return
        if self.state is not OutboundState.STOPPED:
            self._fail("no answer from the registrar", now)

    def _answer(self, response: Response) -> bool:
        """Take the challenge in a 401/407; False if it cannot or must not be answered."""
        proxy = response.status == 407
        values = response.headers.get_lines("proxy-authenticate" if proxy else "www-authenticate")
        value = select_challenge(values)
        if value is None:
            return False
        try:
            stale = parse_auth_params(value)[1].get("stale", "").lower() == "true"
        except DigestError:
            return False
        if self._fresh_credentials and not stale:
            # We just answered a challenge and got another one: the password is wrong. Asking
            # again would only add to the supplier's count of our failures (RFC 3261 22.2).
            return False
        self._challenge = ("Proxy-Authorization" if proxy else "Authorization", value)
        self._nc = 0
        self._answering = True
        return True

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        if granted <= 0:
            self._fail("the registrar granted no time", now)
            return
        if self.state is not OutboundState.REGISTERED:
            log.info(
                "registered with %s (%s) for %d s", self.target.peer, self.target.domain, granted
            )
        self.state = OutboundState.REGISTERED
        self.failures = 0
        self.registered_until = now + granted
        self._schedule(now + refresh_delay(granted))

    def _granted(self, response: Response) -> int:
        """RFC 3261 10.2.4: the expiry of our binding as the 2xx states it."""
        try:
            ours = contact_key(self.contact)
            contacts = response.contacts()
        except SipParseError:
            contacts = []
            ours = ""
        for contact in contacts:
            try:
                same = contact_key(contact.uri) == ours
            except SipParseError:
                continue
            value = contact.params.get("expires")
            if same and value is not None and is_digits(value.strip(), 10):
                return int(value.strip())
        header = response.headers.get("expires")
        if header is not None and is_digits(header.strip(), 10):
            return int(header.strip())
        return self.expires

    def _too_brief(self, response: Response, now: float) -> None:
        value = (response.headers.get("min-expires") or "").strip()
        minimum = int(value) if is_digits(value, 10) else 0
        if self.expires < minimum <= MAX_EXPIRES:
            self.expires = minimum  # 10.2.8: ask again with at least Min-Expires
            self._send(now)
        else:
            self._fail(f"423 Interval Too Brief (Min-Expires {value or 'missing'})", now)

    def _fail(self, why: str, now: float, retry_after: int | None = None) -> None:
        self.failures += 1
        delay = min(self.retry_max, self.retry_min * 2 ** min(self.failures - 1, 20))
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), MAX_EXPIRES))
        if self.failures == 1 or self.state is not OutboundState.FAILED:
            log.warning(
                "registration with %s (%s) failed: %s; retrying in %.0f s",
                self.target.peer,
                self.target.domain,
                why,
                delay,
            )
        self.state = OutboundState.FAILED
        self._schedule(now + delay)

    # --- timers --------------------------------------------------------------------------------

    def _schedule(self, when: float) -> None:
        self._cancel_timer()
        self.next_action_at = when
        self._timer = self.layer.timers.schedule(when, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, now: float) -> None:
        self._timer = None
        if self.state in (OutboundState.REGISTERED, OutboundState.FAILED):
            self._send(now)

    # --- state ---------------------------------------------------------------------------------

    def status(self, now: float) -> OutboundStatus:
        """The state at ``now`` (on the layer's clock)."""
        until = self.registered_until
        return OutboundStatus(
            peer=self.target.peer,
            username=self.target.username,
            registrar=self.target.domain,
            transport=self.target.address.transport,
            state=self.state.value,
            expires=self.expires,
            registered_for=None if until is None or until <= now else until - now,
            next_action_in=None if self.next_action_at is None else self.next_action_at - now,
            failures=self.failures,
            last_status=self.last_status,
            last_reason=self.last_reason,
        )


class OutboundRegistrations:
    """This node's clients: one per enabled supplier peer with a ``register`` block that is
    attached to the node and has an account for it, kept in step with the configuration by
    :meth:`reconcile`. Each node of a cluster registers its own account (``node``); while
    the node does not originate (:attr:`active` false: it does not hold the shared IP that
    calls leave from) it registers none."""

    def __init__(
        self,
        layer: TransactionLayer,
        *,
        node: str = "",
        retry_min: float = 5.0,
        retry_max: float = 300.0,
    ) -> None:
        self.layer = layer
        self.node = node
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.clients: dict[int, OutboundClient] = {}
        self.active = True
        self._peers: tuple[Peer, ...] = ()

    def set_active(self, active: bool, now: float) -> None:
        """Register (``active``) or unregister everything, e.g. as the node takes or leaves
        the shared IP. The caller flushes the transport afterwards."""
        self.active = active
        self.reconcile(self._peers, now)

    def reconcile(self, peers: Iterable[Peer], now: float) -> None:
        """Start, restart or stop clients so that there is one per enabled peer that wants it
        from this node.

        The caller flushes the transport afterwards."""
        self._peers = tuple(peers)
        wanted: dict[int, OutboundTarget] = {}
        for peer in self._peers if self.active else ():
            if not peer.enabled or peer.register is None:
                continue
            try:
                target = OutboundTarget.of(peer, self.node)
            except ValueError as exc:
                log.error("peer %s: cannot register: %s", peer.name, exc)
                continue
            if target is not None:
                wanted[peer.id] = target
        for peer_id, client in list(self.clients.items()):
            if wanted.get(peer_id) != client.target:
                client.stop(now, unregister=True)
                del self.clients[peer_id]
        for peer_id, target in wanted.items():
            if peer_id not in self.clients:
                client = OutboundClient(
                    target, self.layer, retry_min=self.retry_min, retry_max=self.retry_max
                )
                self.clients[peer_id] = client
                client.start(now)

    def stop_all(self, now: float) -> None:
        for client in self.clients.values():
            client.stop(now, unregister=True)

    def statuses(self, now: float) -> list[OutboundStatus]:
        clients = sorted(self.clients.values(), key=lambda c: c.target.peer)
        return [c.status(now) for c in clients]


def _retry_after(response: Response) -> int | None:
    """RFC 3261 20.33: delta-seconds, possibly followed by a comment and parameters."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    return int(head) if is_digits(head, 10) else None


def _hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port`` (a ``sip:`` prefix is allowed)."""
    text = text.strip()
    if text.lower().startswith("sip:"):
        text = text[4:]
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(f"bad registrar address {text!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"bad registrar address {text!r}")
    if not port_text:
        return host, None
    if not is_digits(port_text, 5) or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in registrar address {text!r}")
    return host, int(port_text)
