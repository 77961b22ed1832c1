"""The back-to-back user agent: every call is two dialogs with nothing shared between them.

The caller's INVITE is answered by us (A leg); we place a fresh INVITE (B leg) with our own
Call-ID, tags, branch, Via and Contact, and relay only what the other side needs: status codes,
bodies and a short list of end-to-end headers. That is the topology hiding: no Via, Contact,
Record-Route, Route or Call-ID of one side ever reaches the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from smartswitch.b2bua.call import Attempt, Call, CallState, Leg, PendingRelay
from smartswitch.b2bua.ports import CallPolicy, Destination, Rejection
from smartswitch.model.cdr import HangupSide
from smartswitch.sip.dialog import Dialog
from smartswitch.sip.message import Headers, Request, Response, make_response
from smartswitch.sip.timers import TimerHeap
from smartswitch.sip.transaction import (
    Address,
    ClientTransaction,
    IdGenerator,
    ServerTransaction,
    TransactionLayer,
)
from smartswitch.sip.uri import format_host

log = logging.getLogger("smartswitch.b2bua")

# End-to-end headers a call carries across; everything else stays on its own side.
RELAYED_HEADERS = (
    "content-type",
    "content-disposition",
    "content-encoding",
    "content-language",
    "allow",
    "accept",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "privacy",
    "diversion",
    "history-info",
    "user-to-user",
    "subject",
    "priority",
    "event",
    "subscription-state",
    "reason",
)
RELAYED_RESPONSE_HEADERS = ("content-type", "content-disposition", "content-encoding", "allow")
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE"


@dataclass(frozen=True, slots=True)
class B2buaSettings:
    no_answer_timeout: float = 30.0
    max_call_duration: float = 3 * 3600.0
    advance_on: frozenset[int] = frozenset(range(500, 600)) | {408}
    dialog_ping_interval: float = 60.0  # in-dialog OPTIONS to both legs; 0 = off


class B2BUA:
    """The transaction user that turns incoming INVITEs into bridged calls."""

    def __init__(
        self,
        policy: CallPolicy,
        local: dict[str, tuple[str, int]],
        settings: B2buaSettings | None = None,
        timers: TimerHeap | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings or B2buaSettings()
        self.ids = IdGenerator()
        self.layer = TransactionLayer(self, local, timers, self.ids)
        self.timers = self.layer.timers
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID ... and the A tag
        self.dialogs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) -> leg
        self.wall_clock = wall_clock
        self.request_handlers: dict[str, Callable[[ServerTransaction, Request], None]] = {}
        # Set by the transport: the loop's clock, and a way to send what was queued outside a
        # network or timer callback (CDR durability callbacks).
        self.clock: Callable[[], float] | None = None
        self.wakeup: Callable[[], None] = lambda: None
        self.stats = {"calls": 0, "answered": 0, "rejected": 0}
        # [attempts, answers] by destination label (the supplier peer's name), for /metrics.
        self.label_stats: dict[str, list[int]] = {}

    @property
    def now(self) -> float:
        return self.layer.now

    # --- TransactionUser ------------------------------------------------------------------------

    def on_request(self, tx: ServerTransaction, request: Request) -> None:
        method = request.method
        to_tag = request.to.tag
        if to_tag:
            leg = self.dialogs.get((request.call_id, to_tag))
            if leg is None:
                self._respond(tx, 481)
            else:
                self._in_dialog_request(leg, tx, request)
            return
        if method == "INVITE":
            self._new_call(tx, request)
        elif method == "OPTIONS":
            response = make_response(request, 200, None, self.ids.next())
            response.headers.add("Allow", ALLOW)
            response.headers.add("Accept", "application/sdp")
            self.layer.respond(tx, response)
        elif method in self.request_handlers:
            self.request_handlers[method](tx, request)
        elif method in ("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER"):
            self._respond(tx, 481)
        else:
            response = make_response(request, 405, None, self.ids.next())
            response.headers.add("Allow", ALLOW)
            self.layer.respond(tx, response)

    def on_ack(self, request: Request, source: Address) -> None:
        to_tag = request.to.tag
        leg = self.dialogs.get((request.call_id, to_tag)) if to_tag else None
        if leg is None:
            return
        call = leg.call
        number = request.cseq.number
        if leg.side == "a" and number == call.a_request.cseq.number:
            self.layer.ack_received(call.a_tx)
            if call.deferred_b_ack and call.b_leg is not None:
                call.deferred_b_ack = False
                self._ack_b(call, request)
            return
        pending = call.pending_acks.pop((leg.side, number), None)
        if pending is not None:
            other, _relay, out_cseq = pending
            ack = other.dialog.create_request("ACK", cseq=out_cseq)
            self._copy_headers(request, ack)
            ack.body = request.body
            dest = other.dialog.next_hop()
            self.layer.send_stateless(ack, dest)

    def on_cancel(self, invite_tx: ServerTransaction) -> None:
        call = invite_tx.owner
        if not isinstance(call, Call) or call.state is CallState.ENDED:
            return
        log.info("call %s: cancelled by the caller", call.id)
        call.cancelled = True
        self._cancel_b(call)
        self._fail_call(call, 487, "Request Terminated", HangupSide.CALLER, "cancel")

    def on_response(self, tx: ClientTransaction, response: Response) -> None:
        owner = tx.owner
        if isinstance(owner, Call):
            if tx.request.method == "INVITE":
                self._b_invite_response(owner, tx, response)
        elif isinstance(owner, PendingRelay):
            self._relay_response(owner, tx, response)
        else:
            handler = getattr(owner, "handle_response", None)
            if handler is not None:
                handler(tx, response)

    def on_timeout(self, tx: ClientTransaction) -> None:
        owner = tx.owner
        if isinstance(owner, Call):
            attempt = owner.pending.pop(tx, None)
            if tx.request.method == "INVITE" and attempt is not None:
                attempt.ended = self.now
                attempt.status = 408
                attempt.reason = "Request Timeout"
                self._attempt_failed(owner, 408, "Request Timeout")
        elif isinstance(owner, PendingRelay):
            if owner.server_tx is not None and not owner.server_tx.answered:
                self._respond(owner.server_tx, 408)
            owner.to_leg.pinging = False
            call = owner.call
            if owner.method != "BYE" and call.state is CallState.CONNECTED:
                log.info(
                    "call %s: %s to leg %s timed out", call.id, owner.method, owner.to_leg.side
                )
                # The silent leg gets a BYE too: it may only have lost a few packets.
                self._hangup(call, HangupSide.SWITCH, "leg not responding")
        else:
            handler = getattr(owner, "handle_timeout", None)
            if handler is not None:
                handler(tx)

    def on_ack_timeout(self, tx: ServerTransaction) -> None:
        call = tx.owner
        if isinstance(call, Call) and call.state is CallState.CONNECTED:
            log.info("call %s: no ACK from the caller", call.id)
            self._hangup(call, HangupSide.SWITCH, "no ACK")

    # --- starting a call ------------------------------------------------------------------------

    def _new_call(self, tx: ServerTransaction, request: Request) -> None:
        max_forwards = request.headers.get("max-forwards")
        if max_forwards is not None and int(max_forwards) == 0:
            self._respond(tx, 483)
            return
        request.sip_uri  # noqa: B018 - 416 for a URI scheme we cannot route
        if not request.headers.get("contact"):
            self._respond(tx, 400, "Bad Request (missing Contact)")
            return
        decision = self.policy.route(request, tx.source, self.now)
        self.stats["calls"] += 1
        if isinstance(decision, Rejection):
            self.stats["rejected"] += 1
            log.info("call %s: rejected %s %s", request.call_id, decision.status, decision.reason)
            response = make_response(request, decision.status, decision.reason, self.ids.next())
            for name, value in decision.headers:
                response.headers.add(name, value)
            self.layer.respond(tx, response)
            return
        call = Call(
            id=request.call_id,
            a_tx=tx,
            a_request=request,
            a_tag=self.ids.next(),
            decision=decision,
            setup_time=self.now,
        )
        tx.owner = call
        self.calls[self._call_key(call)] = call
        log.info("call %s: from %s to %s", call.id, tx.source.host, request.uri)
        self._next_attempt(call)

    @staticmethod
    def _call_key(call: Call) -> str:
        return f"{call.id};{call.a_tag}"

    def _next_attempt(self, call: Call) -> None:
        destinations = call.decision.destinations
        if call.decision.fork and call.attempt_index < 0:
            call.attempt_index = len(destinations) - 1
            for dest in destinations:
                self._start_attempt(call, dest)
        else:
            call.attempt_index += 1
            if call.attempt_index >= len(destinations):
                call.attempt_index = len(destinations) - 1
                self._fail_call(
                    call, 503, "Service Unavailable", HangupSide.SWITCH, "no route left"
                )
                return
            self._start_attempt(call, destinations[call.attempt_index])
        call.state = CallState.CALLING if call.ringing_time is None else CallState.EARLY
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
        call.no_answer_timer = self.timers.schedule(
            self.now + self.settings.no_answer_timeout, self._no_answer, call, len(call.attempts)
        )

    def _start_attempt(self, call: Call, dest: Destination) -> None:
        attempt = Attempt(dest, self.now)
        call.attempts.append(attempt)
        call.b_call_id = self.ids.next()
        call.b_tag = self.ids.next()
        invite = self._b_invite(call, dest)
        log.info("call %s: trying %s (%s)", call.id, dest.label or dest.uri, dest.address.host)
        counts = self.label_stats.get(dest.label)
        if counts is None:
            counts = self.label_stats[dest.label] = [0, 0]
        counts[0] += 1
        tx = self.layer.send_request(invite, dest.address, owner=call)
        call.pending[tx] = attempt

    def _contact(self, peer: Address) -> str:
        host, port = self.layer.local_address(peer)
        transport = peer.transport
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{format_host(host)}:{port}{suffix}>"

    def _b_invite(self, call: Call, dest: Destination) -> Request:
        a = call.a_request
        host, _ = self.layer.local_address(dest.address)
        headers = Headers()
        items = headers._items
        mf = a.headers.get("max-forwards")
        items.append(("max-forwards", "Max-Forwards", str(max(int(mf) - 1, 1)) if mf else "70"))
        display = a.from_.display
        display_text = f'"{display}" ' if display else ""
        items.append(
            (
                "from",
                "From",
                f"{display_text}<sip:{dest.caller}@{format_host(host)}>;tag={call.b_tag}",
            )
        )
        items.append(("to", "To", f"<sip:{dest.callee}@{format_host(dest.address.host)}>"))
        items.append(("call-id", "Call-ID", call.b_call_id))
        items.append(("cseq", "CSeq", "1 INVITE"))
        items.append(("contact", "Contact", self._contact(dest.address)))
        invite = Request("INVITE", dest.uri, headers, a.body)
        self._copy_headers(a, invite)
        return invite

    @staticmethod
    def _echo_record_route(request: Request, response: Response) -> None:
        """A UAS answers a dialog-creating request with its Record-Route (RFC 3261 12.1.1):
        the caller's own proxies stay in its path. They are the caller's side's, so this
        reveals nothing of the callee's side."""
        items = response.headers._items
        for item in request.headers._items:
            if item[0] == "record-route":
                items.append(item)

    @staticmethod
    def _copy_headers(source: Request | Response, target: Request | Response) -> None:
        names = RELAYED_HEADERS if isinstance(target, Request) else RELAYED_RESPONSE_HEADERS
        items = target.headers._items
        for item in source.headers._items:
            if item[0] in names:
                items.append(item)

    # --- the B leg's answers --------------------------------------------------------------------

    def _b_invite_response(self, call: Call, tx: ClientTransaction, response: Response) -> None:
        status = response.status
        if tx is call.b_tx and 200 <= status < 300:
            # A retransmitted 2xx: our ACK was lost.
            if call.b_leg is not None and call.b_leg.ack is not None:
                data, dest = call.b_leg.ack
                self.layer.outgoing.append((data, dest))  # type: ignore[arg-type]
            return
        attempt = call.pending.get(tx)
        if attempt is None or call.state is CallState.ENDED or call.cancelled:
            # An abandoned attempt, or one answered after the caller gave up: close it.
            if 200 <= status < 300:
                self._ack_and_bye_stray(tx, response)
            elif 100 < status < 200 and tx.state == "proceeding":
                self.layer.send_cancel(tx)
            return
        if status < 200:
            if status == 100:
                return
            if call.ringing_time is None:
                call.ringing_time = self.now
            call.state = CallState.EARLY
            relay = make_response(call.a_request, status, response.reason, call.a_tag)
            self._echo_record_route(call.a_request, relay)
            relay.headers.add("Contact", self._contact(call.a_tx.source))
            self._copy_headers(response, relay)
            relay.body = response.body
            self.layer.respond(call.a_tx, relay)
            return
        del call.pending[tx]
        attempt.ended = self.now
        attempt.status = status
        attempt.reason = response.reason
        if status < 300:
            call.answered_attempt = attempt
            counts = self.label_stats.get(attempt.destination.label)
            if counts is not None:
                counts[1] += 1
            call.b_tx = tx
            self._cancel_pending(call)  # the other forks lost
            self._connect(call, tx, response)
        else:
            self._attempt_failed(call, status, response.reason)

    def _connect(self, call: Call, tx: ClientTransaction, response: Response) -> None:
        now = self.now
        call.state = CallState.CONNECTED
        call.answer_time = now
        self.stats["answered"] += 1
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
        b_dialog = Dialog.as_uac(tx.request, response, self._contact(tx.dest))
        answered = call.answered_destination
        if tx.dest.reliable or (answered is not None and answered.flow):
            b_dialog.flow = tx.dest  # a TCP connection, or a phone behind NAT (its binding)
        call.b_leg = Leg(call, "b", b_dialog)
        self.dialogs[(b_dialog.call_id, b_dialog.local_tag)] = call.b_leg

        a_req = call.a_request
        a_dialog = Dialog.as_uas(a_req, call.a_tag, self._contact(call.a_tx.source))
        source = call.a_tx.source
        if source.reliable or "received" in a_req.top_via.params:
            a_dialog.flow = source  # NAT or a TCP connection: answer where it came from
        call.a_leg = Leg(call, "a", a_dialog)
        self.dialogs[(a_dialog.call_id, a_dialog.local_tag)] = call.a_leg

        if a_req.body:
            self._ack_b(call, None)
        else:
            call.deferred_b_ack = True  # delayed offer: the caller's ACK carries the answer
        ok = make_response(a_req, 200, response.reason, call.a_tag)
        self._echo_record_route(a_req, ok)
        ok.headers.add("Contact", self._contact(source))
        self._copy_headers(response, ok)
        ok.body = response.body
        self.layer.respond(call.a_tx, ok)

        try:
            self.policy.call_answered(call)
        except Exception:
            log.exception("call %s: the policy failed on answer", call.id)
        limit = self.settings.max_call_duration
        granted = limit
        if call.decision.max_duration is not None:
            granted = min(limit, call.decision.max_duration)
        call.duration_timer = self.timers.schedule(now + granted, self._max_duration, call, limit)
        if self.settings.dialog_ping_interval > 0:
            call.ping_timer = self.timers.schedule(
                now + self.settings.dialog_ping_interval, self._ping, call
            )
        log.info(
            "call %s: answered by %s",
            call.id,
            call.attempt.destination.label if call.attempt else "",
        )

    def _ack_b(self, call: Call, caller_ack: Request | None) -> None:
        leg = call.b_leg
        if leg is None:
            return
        ack = leg.dialog.create_request("ACK", cseq=1)
        if caller_ack is not None:
            self._copy_headers(caller_ack, ack)
            ack.body = caller_ack.body
        dest = leg.dialog.next_hop()
        self.layer.send_stateless(ack, dest)
        leg.ack = (self.layer.outgoing[-1][0], dest)

    def _ack_and_bye_stray(self, tx: ClientTransaction, response: Response) -> None:
        dialog = Dialog.as_uac(tx.request, response, self._contact(tx.dest))
        if tx.dest.reliable:
            dialog.flow = tx.dest
        self.layer.send_stateless(
            dialog.create_request("ACK", cseq=tx.request.cseq.number), dialog.next_hop()
        )
        self.layer.send_request(dialog.create_request("BYE"), dialog.next_hop())

    def _attempt_failed(self, call: Call, status: int, reason: str) -> None:
        if call.state is CallState.ENDED or call.pending:
            return  # other forks are still out: wait for them
        if call.decision.fork:
            status, reason = _best_fork_answer(call)
            self._fail_call(call, status, reason, HangupSide.CALLEE, "rejected")
            return
        if status in self.settings.advance_on and not call.cancelled:
            log.info("call %s: %s %s, advancing", call.id, status, reason)
            self._next_attempt(call)
            return
        self._fail_call(call, status, reason, HangupSide.CALLEE, "rejected")

    def _no_answer(self, call: Call, started: int) -> None:
        if len(call.attempts) != started or call.state in (CallState.CONNECTED, CallState.ENDED):
            return
        log.info("call %s: no answer in %.0f s", call.id, self.settings.no_answer_timeout)
        for attempt in call.pending.values():
            attempt.ended = self.now
            attempt.status = 408
            attempt.reason = "No Answer"
        self._cancel_pending(call)  # abandoned if nothing was heard; a late 2xx gets a BYE
        self._attempt_failed(call, 408, "No Answer")

    def _cancel_pending(self, call: Call) -> None:
        for tx, attempt in call.pending.items():
            self.layer.send_cancel(tx)
            if attempt.status is None:
                attempt.ended = self.now
                attempt.status = 487
                attempt.reason = "Request Terminated"
        call.pending.clear()

    def _cancel_b(self, call: Call) -> None:
        if call.state is not CallState.CONNECTED:
            self._cancel_pending(call)

    def _fail_call(self, call: Call, status: int, reason: str, side: HangupSide, why: str) -> None:
        if call.state is CallState.ENDED:
            return
        if not call.a_tx.answered:
            self.layer.respond(call.a_tx, make_response(call.a_request, status, reason, call.a_tag))
        call.final_status = status
        call.final_reason = reason
        call.hangup_side = side
        call.hangup_reason = why
        self._end(call)

    # --- in-dialog requests ---------------------------------------------------------------------

    def _in_dialog_request(self, leg: Leg, tx: ServerTransaction, request: Request) -> None:
        call = leg.call
        other = call.b_leg if leg.side == "a" else call.a_leg
        method = request.method
        if method == "BYE":
            side = HangupSide.CALLER if leg.side == "a" else HangupSide.CALLEE
            log.info("call %s: BYE from the %s", call.id, side)
            self._hangup(call, side, "bye", skip=leg, bye_tx=tx)
            return
        if other is None or call.state is not CallState.CONNECTED:
            self._respond(tx, 481)
            return
        if method == "OPTIONS" and request.headers.get("max-forwards") == "0":
            self._respond(tx, 200)
            return
        out = other.dialog.create_request(method)
        self._copy_headers(request, out)
        out.body = request.body
        relay = PendingRelay(call, tx, leg, other, method)
        tx.owner = relay
        self.layer.send_request(out, other.dialog.next_hop(), owner=relay)

    def _relay_response(
        self, relay: PendingRelay, tx: ClientTransaction, response: Response
    ) -> None:
        status = response.status
        call = relay.call
        if relay.server_tx is None:
            # One of our own requests (a ping): a 481 or 408 means the leg is gone.
            if status >= 200:
                relay.to_leg.pinging = False
            if status in (408, 481) and call.state is CallState.CONNECTED:
                self._hangup(call, HangupSide.SWITCH, "leg not responding", skip=relay.to_leg)
            return
        server_tx = relay.server_tx
        if status == 100 or server_tx.answered:
            return
        request = server_tx.request
        out = make_response(request, status, response.reason)
        self._copy_headers(response, out)
        out.body = response.body
        if relay.method == "INVITE" and 200 <= status < 300:
            out.headers.add(
                "Contact", relay.from_leg.dialog.local_contact if relay.from_leg else ""
            )
            if relay.from_leg is not None:
                key = (relay.from_leg.side, request.cseq.number)
                call.pending_acks[key] = (relay.to_leg, relay, tx.request.cseq.number)
        self.layer.respond(server_tx, out)
        if status == 481 and call.state is CallState.CONNECTED:
            self._hangup(call, HangupSide.SWITCH, "dialog gone", skip=relay.to_leg)

    # --- ending ---------------------------------------------------------------------------------

    def _max_duration(self, call: Call, limit: float) -> None:
        if call.state is not CallState.CONNECTED:
            return
        extra = 0.0
        if call.answer_time is not None and self.now - call.answer_time < limit:
            try:
                extra = self.policy.extend_call(call)
            except Exception:
                log.exception("call %s: the policy failed to extend the call", call.id)
        if extra > 0:
            # From the end of the slice that ran out, not from now: a timer that fires late
            # (a busy loop) must not lengthen the call by its lateness at every slice.
            timer = call.duration_timer
            start = timer.deadline if timer is not None else self.now
            call.duration_timer = self.timers.schedule(
                start + extra, self._max_duration, call, limit
            )
            return
        log.info("call %s: maximum duration reached", call.id)
        self._hangup(call, HangupSide.SWITCH, "max duration")

    def _ping(self, call: Call) -> None:
        if call.state is not CallState.CONNECTED:
            return
        for leg in (call.a_leg, call.b_leg):
            # One ping at a time per leg: a leg slow to answer is not flooded meanwhile.
            if leg is not None and not leg.pinging:
                leg.pinging = True
                ping = leg.dialog.create_request("OPTIONS")
                relay = PendingRelay(call, None, None, leg, "OPTIONS")
                self.layer.send_request(ping, leg.dialog.next_hop(), owner=relay)
        call.ping_timer = self.timers.schedule(
            self.now + self.settings.dialog_ping_interval, self._ping, call
        )

    def _hangup(
        self,
        call: Call,
        side: HangupSide,
        why: str,
        skip: Leg | None = None,
        bye_tx: ServerTransaction | None = None,
    ) -> None:
        """End a connected call: BYE to every leg but ``skip`` (the one that hung up, whose
        BYE ``bye_tx`` is answered). Both wait until the call's CDR is durable, so a party
        that saw the call end can count on its record."""
        if call.state is CallState.ENDED:
            if bye_tx is not None:
                self._respond(bye_tx, 200)
            return
        call.final_status = 200
        call.final_reason = "OK"
        call.hangup_side = side
        call.hangup_reason = why

        def finish() -> None:
            if self.clock is not None:
                self.layer.now = self.clock()
            if bye_tx is not None:
                self._respond(bye_tx, 200)
            for leg in (call.a_leg, call.b_leg):
                if leg is not None and leg is not skip:
                    bye = leg.dialog.create_request("BYE")
                    relay = PendingRelay(call, None, None, leg, "BYE")
                    self.layer.send_request(bye, leg.dialog.next_hop(), owner=relay)
            self.wakeup()

        self._end(call, finish)

    def _end(self, call: Call, finish: Callable[[], None] | None = None) -> None:
        call.state = CallState.ENDED
        call.end_time = self.now
        for timer in (call.no_answer_timer, call.duration_timer, call.ping_timer):
            if timer is not None:
                timer.cancel()
        self.calls.pop(self._call_key(call), None)
        for leg in (call.a_leg, call.b_leg):
            if leg is not None:
                self.dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)
        done = finish if finish is not None else _nothing
        try:
            self.policy.call_ended(call, done)
        except Exception:
            log.exception("call %s: the policy failed to close the call", call.id)
            done()

    def hangup(self, key: str, now: float) -> bool:
        """Operator hang-up (web UI, shutdown): end the call whatever its state."""
        self.layer.now = now
        call = self.calls.get(key)
        if call is None:
            return False
        if call.state is CallState.CONNECTED:
            self._hangup(call, HangupSide.SWITCH, "operator")
        else:
            self._cancel_b(call)
            self._fail_call(call, 503, "Service Unavailable", HangupSide.SWITCH, "operator")
        return True

    def shutdown(self, now: float) -> None:
        for key in list(self.calls):
            self.hangup(key, now)

    def _respond(self, tx: ServerTransaction, status: int, reason: str | None = None) -> None:
        self.layer.respond(tx, make_response(tx.request, status, reason, self.ids.next()))


def _best_fork_answer(call: Call) -> tuple[int, str]:
    """The answer for the caller when every fork failed (after RFC 3261 16.7 step 6):
    a 6xx wins, then the lowest code, and a set of timeouts becomes 480."""
    answers = [(a.status, a.reason) for a in call.attempts if a.status is not None]
    if not answers:
        return 480, "Temporarily Unavailable"
    global_failures = [a for a in answers if a[0] >= 600]
    if global_failures:
        return global_failures[0]
    answers = [a for a in answers if a[0] != 408]
    if not answers:
        return 480, "Temporarily Unavailable"
    return min(answers)


def _nothing() -> None:
    pass
