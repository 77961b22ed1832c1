"""RFC 3261 section 17 transactions, sans-IO, with the RFC 6026 "Accepted" state for 2xx.

Theory of operation. :class:`TransactionLayer` is fed datagrams (or framed stream messages)
with :meth:`TransactionLayer.receive` and the passing of time with
:meth:`TransactionLayer.handle_timer`. It matches each message to a transaction (17.1.3,
17.2.3), runs the state machines below, and hands what the transaction user must see to its
:class:`TransactionUser`. Everything it wants sent is appended to ``outgoing`` as
``(bytes, Address)``; the transport drains that list after each call. Timers live in one
:class:`TimerHeap` which the transport re-arms a single ``call_at`` for.

Client INVITE: Calling -(1xx)-> Proceeding -(2xx)-> Accepted -(M)-> Terminated
               Calling/Proceeding -(3xx-6xx, ACK sent here)-> Completed -(D)-> Terminated
               Calling -(B)-> Terminated (timeout reported to the user)
Client non-INVITE: Trying -(1xx)-> Proceeding -(final)-> Completed -(K)-> Terminated; -(F)-> timeout
Server INVITE: Proceeding -(2xx)-> Accepted (2xx retransmitted until the user reports the ACK,
               or L fires) ; -(3xx-6xx)-> Completed -(ACK)-> Confirmed -(I)-> Terminated; -(H)->
Server non-INVITE: Trying -(1xx)-> Proceeding -(final)-> Completed -(J)-> Terminated

On reliable transports nothing is retransmitted and timers D, I, J, K are zero (17.1.1.2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import NamedTuple, Protocol

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import (
    Headers,
    Request,
    Response,
    make_response,
    parse_message,
    response_from_partial,
)
from smartswitch.sip.timers import Timer, TimerHeap

log = logging.getLogger("smartswitch.sip")

T1 = 0.5
T2 = 4.0
T4 = 5.0

MAGIC_COOKIE = "z9hG4bK"


class Address(NamedTuple):
    transport: str  # "udp" or "tcp"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


class IdGenerator:
    """Branches, tags and Call-IDs: a random per-process prefix plus a counter.

    Unique across restarts thanks to the prefix, and far cheaper than a random value each time.
    """

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:x}"

    def branch(self) -> str:
        return MAGIC_COOKIE + self.next()


class TransactionUser(Protocol):
    """What the layer tells its user (the B2BUA, the registrar)."""

    def on_request(self, tx: ServerTransaction, request: Request) -> None: ...

    def on_ack(self, request: Request, source: Address) -> None:
        """An ACK matching no transaction: the ACK of a 2xx, end to end (RFC 3261 13.2.2.4)."""

    def on_cancel(self, invite_tx: ServerTransaction) -> None:
        """The caller CANCELled a pending INVITE; the CANCEL itself is answered already."""

    def on_response(self, tx: ClientTransaction, response: Response) -> None: ...

    def on_timeout(self, tx: ClientTransaction) -> None:
        """No final response in time (Timer B or F), or the transport failed."""

    def on_ack_timeout(self, tx: ServerTransaction) -> None:
        """A 2xx we sent was never ACKed (64*T1): the session must be torn down (13.3.1.4)."""


class ClientTransaction:
    __slots__ = (
        "_interval",
        "_retransmit",
        "_timeout",
        "data",
        "dest",
        "is_invite",
        "key",
        "owner",
        "request",
        "state",
    )

    def __init__(self, key: tuple[str, str], request: Request, data: bytes, dest: Address) -> None:
        self.key = key
        self.request = request
        self.data = data
        self.dest = dest
        self.is_invite = request.method == "INVITE"
        self.state = "calling" if self.is_invite else "trying"
        self.owner: object = None  # the user's object for this transaction (a call leg)
        self._retransmit: Timer | None = None
        self._timeout: Timer | None = None
        self._interval = T1

    @property
    def branch(self) -> str:
        return self.key[0]


class ServerTransaction:
    __slots__ = (
        "_interval",
        "_retransmit",
        "_timeout",
        "is_invite",
        "key",
        "last_response",
        "last_response_data",
        "owner",
        "request",
        "source",
        "state",
    )

    def __init__(self, key: tuple[str, ...], request: Request, source: Address) -> None:
        self.key = key
        self.request = request
        self.source = source
        self.is_invite = request.method == "INVITE"
        self.state = "proceeding" if self.is_invite else "trying"
        self.last_response: Response | None = None
        self.last_response_data: bytes | None = None
        self.owner: object = None
        self._retransmit: Timer | None = None
        self._timeout: Timer | None = None
        self._interval = T1

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.state not in ("proceeding", "trying")


def _server_key(request: Request, method: str) -> tuple[str, ...]:
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, str(via.port or ""), method)
    # RFC 2543 peers: no magic cookie, match on the dialog-ish identifiers (17.2.3).
    return (
        "2543",
        request.call_id,
        request.from_.tag or "",
        str(request.cseq.number),
        str(via),
        method,
    )


class TransactionLayer:
    def __init__(
        self,
        user: TransactionUser,
        local: dict[str, tuple[str, int]],
        timers: TimerHeap | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        """``local`` maps a transport ("udp", "tcp") to the host and port we put in our Via."""
        self.user = user
        self.local = local
        self.timers = timers if timers is not None else TimerHeap()
        self.ids = ids if ids is not None else IdGenerator()
        self.outgoing: list[tuple[bytes, Address]] = []
        # Where the node listens on a wildcard address, the transport tells which of its
        # addresses reaches a destination.
        self.local_for: Callable[[Address], tuple[str, int]] | None = None
        self.now = 0.0
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.stats_malformed = 0

    # --- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """One message from the network. Never raises: faults become answers or log lines."""
        self.now = now
        try:
            message = parse_message(data, require_content_length=source.reliable)
        except SipParseError as exc:
            self._malformed(exc, source)
            return
        except Exception:
            # A bug in the parser must cost one message, not the transport's receive loop.
            self.stats_malformed += 1
            log.exception("parser failure on a message from %s", source)
            return
        try:
            if isinstance(message, Request):
                self._receive_request(message, source)
            else:
                self._receive_response(message, source)
        except SipParseError as exc:
            # A header parsed lazily by the user turned out to be malformed.
            if isinstance(message, Request):
                self._reject(message, source, exc.status, exc.reason)
            else:
                self.stats_malformed += 1
                log.info("dropped malformed response from %s: %s", source, exc.reason)
        except Exception:
            log.exception("error handling a message from %s", source)
            if isinstance(message, Request):
                self._reject(message, source, 500, "Server Internal Error")

    def _malformed(self, exc: SipParseError, source: Address) -> None:
        self.stats_malformed += 1
        partial = exc.partial
        from smartswitch.sip.message import PartialMessage

        if not isinstance(partial, PartialMessage) or not partial.is_request:
            log.info("dropped malformed response from %s: %s", source, exc.reason)
            return
        if partial.first_line.startswith("ACK "):
            return  # never answer an ACK (RFC 3261 17.2.1)
        log.info("malformed request from %s: %s", source, exc.reason)
        reason = f"Bad Request ({exc.reason})" if exc.status == 400 else exc.reason
        reason = reason.replace("\r", " ").replace("\n", " ")
        data = response_from_partial(partial, exc.status, reason, self.ids.next())
        self.outgoing.append((data, source))

    def _reject(self, request: Request, source: Address, status: int, reason: str) -> None:
        if request.method == "ACK":
            return
        try:
            tx = self.server.get(_server_key(request, request.method))
            response = make_response(request, status, reason, self.ids.next())
            if tx is not None:
                if not tx.answered:
                    self.respond(tx, response)
            else:
                self.outgoing.append((response.to_bytes(), source))
        except SipParseError:
            return
        except Exception:
            # Called from receive()'s error handlers, which must not raise in turn.
            log.exception("could not answer a request from %s", source)

    def _receive_request(self, request: Request, source: Address) -> None:
        via = request.top_via
        # RFC 3581 / RFC 3261 18.2.1: remember where the request really came from.
        if "rport" in via.params or via.host != source.host:
            if "rport" in via.params:
                via.params["rport"] = str(source.port)
            via.params["received"] = source.host
            self._rewrite_top_via(request)
        method = request.method
        if method == "ACK":
            tx = self.server.get(_server_key(request, "INVITE"))
            if tx is not None and tx.state in ("completed", "confirmed"):
                self._server_confirmed(tx)
                return
            if tx is not None and tx.state == "proceeding":
                return  # an ACK before any final response: nothing to acknowledge
            self.user.on_ack(request, source)
            return
        key = _server_key(request, method)
        tx = self.server.get(key)
        if tx is not None:
            # A retransmission: answer with what we answered last (17.2.1, 17.2.2). In Accepted
            # the 2xx has its own retransmission (RFC 6026 7.1) and Confirmed only absorbs.
            if tx.last_response_data is not None and tx.state not in ("accepted", "confirmed"):
                self.outgoing.append((tx.last_response_data, tx.source))
            return
        tx = ServerTransaction(key, request, source)
        self.server[key] = tx
        if method == "CANCEL":
            self._receive_cancel(tx, request)
            return
        if tx.is_invite:
            # 17.2.1: the transaction answers 100 itself so the caller stops retransmitting.
            self.respond(tx, make_response(request, 100))
        self.user.on_request(tx, request)

    def _receive_cancel(self, cancel_tx: ServerTransaction, cancel: Request) -> None:
        invite_tx = self.server.get(_server_key(cancel, "INVITE"))
        if invite_tx is None or invite_tx.terminated:
            self.respond(cancel_tx, make_response(cancel, 481, None, self.ids.next()))
            return
        self.respond(cancel_tx, make_response(cancel, 200, None, self.ids.next()))
        if not invite_tx.answered:
            self.user.on_cancel(invite_tx)

    def _rewrite_top_via(self, request: Request) -> None:
        headers = request.headers
        values = headers.get_all("via")
        values[0] = str(request.top_via)
        items = [it for it in headers.items() if it[0] != "via"]
        first = next(i for i, it in enumerate(headers.items()) if it[0] == "via")
        new = Headers()
        new._items = items[:first] + [("via", "Via", v) for v in values] + items[first:]
        request.headers = new

    def _receive_response(self, response: Response, source: Address) -> None:
        via = response.top_via
        branch = via.branch or ""
        tx = self.client.get((branch, response.cseq.method))
        if tx is None:
            log.debug("stray response %s from %s", response.status, source)
            return
        status = response.status
        state = tx.state
        if tx.is_invite:
            if status < 200:
                if state == "calling":
                    tx.state = "proceeding"
                    self._cancel_retransmit(tx)
                    if tx._timeout is not None:
                        tx._timeout.cancel()
                        tx._timeout = None
                if state in ("calling", "proceeding"):
                    self.user.on_response(tx, response)
            elif status < 300:
                if state in ("calling", "proceeding"):
                    tx.state = "accepted"
                    self._cancel_timers(tx)
                    tx._timeout = self.timers.schedule(self.now + 64 * T1, self._client_end, tx)
                if tx.state == "accepted":
                    self.user.on_response(tx, response)
            else:
                if state in ("calling", "proceeding"):
                    tx.state = "completed"
                    self._cancel_timers(tx)
                    self._send_ack_for_error(tx, response)
                    wait = 0.0 if tx.dest.reliable else 32.0
                    tx._timeout = self.timers.schedule(self.now + wait, self._client_end, tx)
                    self.user.on_response(tx, response)
                elif state == "completed":
                    self._send_ack_for_error(tx, response)
        else:
            if state in ("completed", "terminated"):
                return
            if status < 200:
                tx.state = "proceeding"
                self.user.on_response(tx, response)
            else:
                tx.state = "completed"
                self._cancel_timers(tx)
                wait = 0.0 if tx.dest.reliable else T4
                tx._timeout = self.timers.schedule(self.now + wait, self._client_end, tx)
                self.user.on_response(tx, response)

    # --- client side ---------------------------------------------------------------------------

    def local_address(self, dest: Address) -> tuple[str, int]:
        """The host and port we put in Via and Contact for messages to ``dest``."""
        if self.local_for is not None:
            return self.local_for(dest)
        return self.local.get(dest.transport) or self.local["udp"]

    def _via(self, dest: Address, branch: str) -> str:
        transport = dest.transport
        host, port = self.local_address(dest)
        host_text = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{transport.upper()} {host_text}:{port};branch={branch};rport"

    def send_request(
        self, request: Request, dest: Address, owner: object = None
    ) -> ClientTransaction:
        """Start a client transaction: adds our Via and sends ``request`` to ``dest``."""
        branch = self.ids.branch()
        request.headers.add("Via", self._via(dest, branch), first=True)
        request.invalidate()
        return self._start_client(request, dest, branch, owner)

    def _start_client(
        self, request: Request, dest: Address, branch: str, owner: object
    ) -> ClientTransaction:
        data = request.to_bytes()
        tx = ClientTransaction((branch, request.method), request, data, dest)
        tx.owner = owner
        self.client[tx.key] = tx
        self.outgoing.append((data, dest))
        if not dest.reliable:
            tx._retransmit = self.timers.schedule(self.now + T1, self._client_retransmit, tx)
        tx._timeout = self.timers.schedule(self.now + 64 * T1, self._client_timeout, tx)
        return tx

    def send_cancel(self, invite_tx: ClientTransaction) -> ClientTransaction | None:
        """CANCEL a pending INVITE (RFC 3261 9.1); only after a provisional response arrived."""
        if invite_tx.state != "proceeding":
            return None
        invite = invite_tx.request
        headers = Headers()
        for key, name, value in invite.headers.items():
            if key in ("via", "from", "to", "call-id", "route", "max-forwards"):
                if key == "via":
                    headers.add(name, value)
                    # only the top Via (ours): an INVITE we sent has just one
                else:
                    headers.add(name, value)
        headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        return self._start_client(cancel, invite_tx.dest, invite_tx.branch, invite_tx.owner)

    def send_stateless(self, request: Request, dest: Address) -> None:
        """Send a request outside any transaction: the ACK of a 2xx (RFC 3261 13.2.2.4)."""
        request.headers.add("Via", self._via(dest, self.ids.branch()), first=True)
        request.invalidate()
        self.outgoing.append((request.to_bytes(), dest))

    def _send_ack_for_error(self, tx: ClientTransaction, response: Response) -> None:
        """The ACK of a 3xx-6xx belongs to the INVITE's transaction (17.1.1.3)."""
        invite = tx.request
        headers = Headers()
        for key, name, value in invite.headers.items():
            if key == "via":
                headers.add(name, value)
                break
        for key, name, value in invite.headers.items():
            if key in ("from", "call-id", "route", "max-forwards"):
                headers.add(name, value)
        to_value = response.headers.get("to")
        headers.add("To", to_value if to_value is not None else invite.headers.get("to") or "")
        headers.add("CSeq", f"{invite.cseq.number} ACK")
        ack = Request("ACK", invite.uri, headers)
        self.outgoing.append((ack.to_bytes(), tx.dest))

    def _client_retransmit(self, tx: ClientTransaction) -> None:
        if tx.state not in ("calling", "trying", "proceeding") or (
            tx.is_invite and tx.state != "calling"
        ):
            return
        self.outgoing.append((tx.data, tx.dest))
        # Timer A doubles without bound (B ends it); Timer E doubles up to T2 (17.1.2.2).
        tx._interval = tx._interval * 2 if tx.is_invite else min(tx._interval * 2, T2)
        if not tx.is_invite and tx.state == "proceeding":
            tx._interval = T2
        tx._retransmit = self.timers.schedule(self.now + tx._interval, self._client_retransmit, tx)

    def _client_timeout(self, tx: ClientTransaction) -> None:
        if tx.state in ("calling", "trying", "proceeding") and not (
            tx.is_invite and tx.state == "proceeding"
        ):
            self._client_end(tx)
            self.user.on_timeout(tx)

    def _client_end(self, tx: ClientTransaction) -> None:
        self._cancel_timers(tx)
        tx.state = "terminated"
        self.client.pop(tx.key, None)

    def transport_error(self, dest: Address) -> None:
        """The transport could not reach ``dest``: fail every transaction waiting on it."""
        for tx in [t for t in self.client.values() if t.dest == dest]:
            if tx.state in ("calling", "trying", "proceeding"):
                self._client_end(tx)
                self.user.on_timeout(tx)

    def _cancel_retransmit(self, tx: ClientTransaction | ServerTransaction) -> None:
        if tx._retransmit is not None:
            tx._retransmit.cancel()
            tx._retransmit = None

    def _cancel_timers(self, tx: ClientTransaction | ServerTransaction) -> None:
        self._cancel_retransmit(tx)
        if tx._timeout is not None:
            tx._timeout.cancel()
            tx._timeout = None

    # --- server side ---------------------------------------------------------------------------

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        """Send a response within a server transaction and move its state machine."""
        if tx.terminated or tx.state in ("completed", "confirmed", "accepted"):
            log.debug("late response %s on a finished transaction", response.status)
            return
        data = response.to_bytes()
        tx.last_response = response
        tx.last_response_data = data
        self.outgoing.append((data, tx.source))
        status = response.status
        reliable = tx.source.reliable
        if status < 200:
            if not tx.is_invite:
                tx.state = "proceeding"
            return
        if tx.is_invite:
            if status < 300:
                tx.state = "accepted"
                if not reliable:
                    tx._interval = T1
                    tx._retransmit = self.timers.schedule(
                        self.now + T1, self._server_retransmit, tx
                    )
                tx._timeout = self.timers.schedule(self.now + 64 * T1, self._server_ack_timeout, tx)
            else:
                tx.state = "completed"
                if not reliable:
                    tx._interval = T1
                    tx._retransmit = self.timers.schedule(
                        self.now + T1, self._server_retransmit, tx
                    )
                tx._timeout = self.timers.schedule(self.now + 64 * T1, self._server_end, tx)
        else:
            tx.state = "completed"
            wait = 0.0 if reliable else 64 * T1
            tx._timeout = self.timers.schedule(self.now + wait, self._server_end, tx)

    def ack_received(self, tx: ServerTransaction) -> None:
        """The user matched the ACK of our 2xx to this INVITE: stop retransmitting it.

        The transaction stays in Accepted until Timer L (64*T1 after the 2xx), so that a
        retransmission of the INVITE still in flight is absorbed instead of arriving at the user
        as a new request (RFC 6026 7.1, 8.7).
        """
        if tx.state != "accepted":
            return
        self._cancel_retransmit(tx)
        timer_l = tx._timeout
        deadline = timer_l.deadline if timer_l is not None else self.now
        if timer_l is not None:
            timer_l.cancel()
        tx._timeout = self.timers.schedule(deadline, self._server_end, tx)

    def _server_retransmit(self, tx: ServerTransaction) -> None:
        if tx.state not in ("completed", "accepted") or tx.last_response_data is None:
            return
        self.outgoing.append((tx.last_response_data, tx.source))
        tx._interval = min(tx._interval * 2, T2)  # Timer G (17.2.1) and 13.3.1.4 alike
        tx._retransmit = self.timers.schedule(self.now + tx._interval, self._server_retransmit, tx)

    def _server_confirmed(self, tx: ServerTransaction) -> None:
        if tx.state == "confirmed":
            return
        self._cancel_timers(tx)
        tx.state = "confirmed"
        wait = 0.0 if tx.source.reliable else T4
        tx._timeout = self.timers.schedule(self.now + wait, self._server_end, tx)

    def _server_ack_timeout(self, tx: ServerTransaction) -> None:
        if tx.state == "accepted":
            self._server_end(tx)
            self.user.on_ack_timeout(tx)

    def _server_end(self, tx: ServerTransaction) -> None:
        self._cancel_timers(tx)
        tx.state = "terminated"
        self.server.pop(tx.key, None)

    # --- time ----------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``. Never raises."""
        self.now = now
        try:
            self.timers.run_due(now)
        except Exception:
            log.exception("error in a timer")

    def get_timer(self) -> float | None:
        return self.timers.next_deadline()

    def drain(self) -> list[tuple[bytes, Address]]:
        out = self.outgoing
        self.outgoing = []
        return out
