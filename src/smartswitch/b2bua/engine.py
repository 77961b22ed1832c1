"""The back-to-back user agent: every call is two dialogs with nothing shared between them.

The caller's INVITE is answered by us (A leg); we place a fresh INVITE (B leg) with our own
Call-ID, tags, branch, Via and Contact, and relay only what the other side needs: status codes,
bodies and a short list of end-to-end headers. That is the topology hiding: no Via, Contact,
Record-Route, Route or Call-ID of one side ever reaches the other.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from smartswitch.b2bua.call import Attempt, Call, CallState, Leg, PendingAck
from smartswitch.b2bua.ports import (
    CallObserver,
    CallPolicy,
    Destination,
    MediaRelay,
    Rejection,
)
from smartswitch.model.cdr import HangupSide
from smartswitch.model.media import (
    CallRef,
    MediaFailure,
    MediaOptions,
    MediaSettings,
    MediaUnavailable,
)
from smartswitch.sip.dialog import Dialog
from smartswitch.sip.message import Headers, Request, Response, SipMessage, make_response
from smartswitch.sip.sdp import SdpError, SessionDescription
from smartswitch.sip.transaction import (
    TIMER_F,
    Address,
    ClientTransaction,
    ServerTransaction,
    State,
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

Resume = Callable[[Callable[[float], None]], None]
"""Runs work that starts outside any input (a CDR made durable later): calls it with the
time, then sends what it queued. The transport's (:meth:`SipEndpoint.run`)."""


@dataclass(frozen=True, slots=True)
class B2buaSettings:
    no_answer_timeout: float = 30.0
    max_call_duration: float = 3 * 3600.0
    advance_on: frozenset[int] = frozenset(range(500, 600)) | {408}
    dialog_ping_interval: float = 60.0  # in-dialog OPTIONS to both legs; 0 = off
    # A ping unanswered this long ends the call. Timer F ends the OPTIONS then anyway;
    # shorter frees a dead call's channels (and stops its charging) sooner.
    dialog_ping_timeout: float = TIMER_F


class B2BUA:
    """Turns INVITEs into bridged calls: the calls' part of the node's
    :class:`~smartswitch.b2bua.application.SipApplication`, which hands it INVITEs, in-dialog
    requests and ACKs. It sends through ``layer`` and keeps its timers in the layer's heap.

    Time is passed in: every entry point (:meth:`invite`, :meth:`in_dialog`, :meth:`ack`,
    :meth:`hangup`, :meth:`shutdown`, the callbacks of its transactions and timers) takes the
    ``now`` it runs at, and hands it on to the layer.
    """

    def __init__(
        self,
        policy: CallPolicy,
        layer: TransactionLayer,
        settings: B2buaSettings | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings or B2buaSettings()
        self.layer = layer
        self.ids = layer.ids
        self.timers = layer.timers
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID ... and the A tag
        self.dialogs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) -> leg
        self.resume: Resume = _cannot_resume
        # The loop's clock, set by the node: for readers outside the call path (the web UI's
        # call ages and hang-ups); the B2BUA itself never reads it.
        self.clock: Callable[[], float] | None = None
        self.stats = {"calls": 0, "answered": 0, "rejected": 0, "media_failed": 0}
        # The media relay for calls whose destination relays media (None: no relay on this
        # node; such calls fall back to direct media where allowed, else get 503).
        self.media: MediaRelay | None = None
        self.media_calls: dict[str, Call] = {}  # by relayed session (the relay's call-id)
        # [attempts, answers] by destination label (the supplier peer's name), for /metrics.
        self.label_stats: dict[str, list[int]] = {}
        # Told of every call's legs (call capture); None costs the call path nothing.
        self.observer: CallObserver | None = None

    @property
    def now(self) -> float:
        """The time of the latest input, for status readers."""
        return self.layer.now

    # --- what the SIP application hands over ----------------------------------------------------

    def in_dialog(self, tx: ServerTransaction, request: Request, now: float) -> None:
        """A request with a To tag: within one of our calls' dialogs, or 481."""
        leg = self.dialogs.get((request.call_id, request.to.tag or ""))
        if leg is None:
            self._respond(tx, 481, now)
        else:
            self._in_dialog_request(leg, tx, request, now)

    def ack(self, request: Request, source: Address, now: float) -> None:
        """An ACK matching no transaction: of a 2xx we relayed, end to end."""
        to_tag = request.to.tag
        leg = self.dialogs.get((request.call_id, to_tag)) if to_tag else None
        if leg is None:
            return
        call = leg.call
        number = request.cseq.number
        if leg.side == "a" and number == call.a_request.cseq.number:
            self.layer.ack_received(call.a_tx, now)
            if call.deferred_b_ack and call.b_leg is not None:
                call.deferred_b_ack = False
                self._ack_b(call, request)
            return
        pending = call.pending_acks.pop((leg.side, number), None)
        if pending is not None:
            self.layer.ack_received(pending.server_tx, now)  # 13.3.1.4: stop resending the 2xx
            ack = pending.to_leg.dialog.create_request("ACK", cseq=pending.cseq)
            self._copy_headers(request, ack)
            ack.body = request.body
            dest = pending.to_leg.dialog.next_hop()
            # Our re-INVITE lingers until Timer M: its 2xx again (this ACK lost) gets the
            # same ACK from the layer, with nothing of the call kept for it.
            self.layer.let_go(pending.client_tx, ack=(self.layer.send_stateless(ack, dest), dest))

    # --- what a call's transactions report ------------------------------------------------------

    def _caller_cancelled(self, call: Call, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        log.debug("call %s: cancelled by the caller", call.id)
        call.cancelled = True
        self._cancel_b(call, now)
        self._fail_call(call, 487, "Request Terminated", HangupSide.CALLER, "cancel", now)

    def _caller_never_acked(self, call: Call, now: float) -> None:
        if call.state is CallState.CONNECTED:
            log.info("call %s: no ACK from the caller", call.id)
            self._hangup(call, HangupSide.SWITCH, "no ACK", now)

    def _b_invite_timeout(self, call: Call, tx: ClientTransaction, now: float) -> None:
        attempt = call.pending.pop(tx, None)
        if attempt is not None:
            attempt.ended = now
            attempt.status = 408
            attempt.reason = "Request Timeout"
            self._media_forget(call, attempt.media_id)
            self._attempt_failed(call, 408, "Request Timeout", now)

    def _relay_timeout(self, relay: _Relay, now: float) -> None:
        if relay.server_tx is not None and not relay.server_tx.answered:
            self._respond(relay.server_tx, 408, now)
        _ping_over(relay.to_leg)
        call = relay.call
        if relay.method != "BYE" and call.state is CallState.CONNECTED:
            log.info("call %s: %s to leg %s timed out", call.id, relay.method, relay.to_leg.side)
            # The silent leg gets a BYE too: it may only have lost a few packets.
            self._hangup(call, HangupSide.SWITCH, "leg not responding", now)

    # --- starting a call ------------------------------------------------------------------------

    def invite(
        self, tx: ServerTransaction, request: Request, now: float, source: Address | None = None
    ) -> None:
        """An INVITE outside any dialog: a new call, or its refusal. ``source``: the caller's
        real address when a trusted dispatcher forwarded the INVITE (else the packet's)."""
        max_forwards = request.headers.get("max-forwards")
        if max_forwards is not None and int(max_forwards) == 0:
            self._respond(tx, 483, now)
            return
        request.sip_uri  # noqa: B018 - 416 for a URI scheme we cannot route
        if not request.headers.get("contact"):
            self._respond(tx, 400, now, "Bad Request (missing Contact)")
            return
        if self._bad_sdp(tx, request, now):
            return
        session = self.policy.route(request, source or tx.source, now)
        self.stats["calls"] += 1
        if isinstance(session, Rejection):
            self.stats["rejected"] += 1
            log.debug("call %s: rejected %s %s", request.call_id, session.status, session.reason)
            response = make_response(request, session.status, session.reason, self.ids.next())
            for name, value in session.headers:
                response.headers.add(name, value)
            self.layer.respond(tx, response, now)
            return
        # The policy knows the caller now (its ACL, certificate or password): its answers
        # are no longer held to the request's size (smartswitch.sip.flood).
        tx.metered = False
        call = Call(
            id=request.call_id,
            a_tx=tx,
            a_request=request,
            a_tag=self.ids.next(),
            session=session,
            setup_time=now,
        )
        tx.owner = _CallInvites(self, call)
        self.calls[self._call_key(call)] = call
        log.debug("call %s: from %s to %s", call.id, tx.source.host, request.uri)
        if self.observer is not None:
            self.observer.call_started(call.id, session, now)
        self._next_attempt(call, now)

    @staticmethod
    def _call_key(call: Call) -> str:
        return f"{call.id};{call.a_tag}"

    def _next_attempt(self, call: Call, now: float) -> None:
        destinations = call.session.destinations
        if call.session.fork and call.attempt_index < 0:
            call.attempt_index = len(destinations) - 1
            for index in range(len(destinations)):
                self._start_attempt(call, index, now)
        else:
            call.attempt_index += 1
            if call.attempt_index >= len(destinations):
                call.attempt_index = len(destinations) - 1
                self._fail_call(
                    call, 503, "Service Unavailable", HangupSide.SWITCH, "no route left", now
                )
                return
            self._start_attempt(call, call.attempt_index, now)
        if call.state is CallState.ENDED:
            return  # refused on the spot (no media relay for a relayed destination)
        call.state = CallState.CALLING if call.ringing_time is None else CallState.EARLY
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
        call.no_answer_timer = self.timers.schedule(
            now + self.settings.no_answer_timeout, self._no_answer, call, len(call.attempts)
        )

    def _start_attempt(self, call: Call, index: int, now: float) -> None:
        dest = call.session.destinations[index]
        attempt = Attempt(index, dest, now)
        call.attempts.append(attempt)
        call.b_call_id = self.ids.next()
        call.b_tag = self.ids.next()
        invite = self._b_invite(call, dest)
        log.debug("call %s: trying %s (%s)", call.id, dest.label or dest.uri, dest.address.host)
        counts = self.label_stats.get(dest.label)
        if counts is None:
            counts = self.label_stats[dest.label] = [0, 0]
        counts[0] += 1
        if self.observer is not None:
            self.observer.leg_started(call.id, call.b_call_id, call.session, index)
        # A delayed offer (no SDP in the INVITE) passes through: the caller's offer would
        # come in the ACK, after the callee's answer, which this relay does not rewrite.
        if dest.media.relay and invite.body and self._offer_media(call, attempt, invite, now):
            return
        self._send_attempt(call, attempt, invite, now)

    def _send_attempt(self, call: Call, attempt: Attempt, invite: Request, now: float) -> None:
        tx = self.layer.send_request(
            invite, attempt.destination.address, now, owner=_CallInvites(self, call)
        )
        call.pending[tx] = attempt

    # --- relayed media --------------------------------------------------------------------------

    def _bad_sdp(self, tx: ServerTransaction, request: Request, now: float) -> bool:
        """Answer an INVITE or UPDATE whose SDP we cannot read (488, or 400 for a body that is
        not SDP) with the reason in a Reason header; True if it was."""
        if not request.body or not _is_sdp(request):
            return False
        try:
            SessionDescription.parse(request.body)
        except SdpError as exc:
            log.info("call %s: bad SDP: %s", request.call_id, exc)
            response = make_response(request, exc.status, None, self.ids.next())
            response.headers.add("Reason", _reason_header(exc.status, str(exc)))
            self.layer.respond(tx, response, now)
            return True
        return False

    def _offer_media(self, call: Call, attempt: Attempt, invite: Request, now: float) -> bool:
        """Offer the caller's SDP to the relay for ``attempt``; the INVITE leaves with the
        relay's SDP once it answers. False: send the INVITE as it is (direct media, the relay
        being down and the destination allowing it)."""
        settings = attempt.destination.media
        media = self.media
        if media is None or not media.available:
            if settings.fallback:
                log.info("call %s: no media relay up: direct media", call.id)
                return False
            failure = MediaUnavailable("no media relay is up", command="offer")
            self._media_failed(call, attempt, failure, now)
            return True
        media_id = call.b_call_id
        attempt.media_id = media_id
        call.media_ids.add(media_id)
        self.media_calls[media_id] = call
        call.offering += 1
        ref = CallRef(media_id, call.a_request.from_.tag or "")

        def offered(now: float, result: bytes | MediaFailure) -> None:
            call.offering -= 1
            if call.state is CallState.ENDED or call.cancelled or attempt.status is not None:
                self._media_forget(call, media_id)  # the call ended while the relay answered
                return
            if isinstance(result, MediaFailure):
                self._media_forget(call, media_id)
                if isinstance(result, MediaUnavailable) and settings.fallback:
                    log.info("call %s: media relay failed (%s): direct", call.id, result.reason)
                    self._send_attempt(call, attempt, invite, now)
                    return
                self._media_failed(call, attempt, result, now)
                return
            invite.body = result
            self._send_attempt(call, attempt, invite, now)

        # A caller behind NAT: its media goes to where its SIP comes from.
        nat = _nat_source(invite.body, call.a_tx.source.host)
        options = _options(settings, offer=True, nat_source=nat)
        media.offer(ref, invite.body, options, self._later(offered))
        return True

    def _later(
        self, work: Callable[[float, bytes | MediaFailure], None]
    ) -> Callable[[bytes | MediaFailure], None]:
        """The relay's reply, run as new input of the B2BUA (with the time, its sends flushed)."""

        def reply(result: bytes | MediaFailure) -> None:
            self.resume(lambda now: work(now, result))

        return reply

    def _media_failed(
        self, call: Call, attempt: Attempt, failure: MediaFailure, now: float
    ) -> None:
        """The relay could not take the attempt's media: the call gets the failure's status
        (503 when no relay answers, 488 for an SDP it refused) with the reason, never a half
        set-up call; another route would meet the same relay."""
        self.stats["media_failed"] += 1
        log.warning("call %s: media relay: %s", call.id, failure)
        attempt.ended = now
        attempt.status = failure.status
        attempt.reason = f"media: {failure.reason}"
        if call.pending or call.offering:
            return  # other forks are still out
        reason = "Service Unavailable" if failure.status == 503 else None
        self._fail_call(
            call,
            failure.status,
            reason or _PHRASES.get(failure.status, "Media Failure"),
            HangupSide.SWITCH,
            "media relay failed",
            now,
            headers=(("Reason", _reason_header(failure.status, f"media relay: {failure.reason}")),),
        )

    def _media_forget(self, call: Call, media_id: str | None) -> None:
        """End a relayed session (an attempt that failed or lost, or the call's end)."""
        if media_id is None or media_id not in call.media_ids:
            return
        call.media_ids.discard(media_id)
        self.media_calls.pop(media_id, None)
        if self.media is not None:
            recorded = media_id == call.media_id and self._media_settings(call).record
            self.media.delete(media_id, call.id if recorded else None)

    def media_lost(self, media_ids: list[str], now: float) -> int:
        """The relay holding these sessions died (its rtpengine restarted): their calls have
        no media any more. End them, saying so in their CDRs; returns how many."""
        ended = 0
        for media_id in media_ids:
            call = self.media_calls.pop(media_id, None)
            if call is None or call.state is CallState.ENDED:
                continue
            call.media_ids.discard(media_id)
            ended += 1
            log.warning("call %s: its media relay was lost", call.id)
            if call.state is CallState.CONNECTED:
                self._hangup(call, HangupSide.SWITCH, "media relay lost", now)
            else:
                self._cancel_b(call, now)
                self._fail_call(
                    call,
                    503,
                    "Service Unavailable",
                    HangupSide.SWITCH,
                    "media relay lost",
                    now,
                    headers=(("Reason", _reason_header(503, "media relay lost")),),
                )
        return ended

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

    def _b_invite_response(
        self, call: Call, tx: ClientTransaction, response: Response, now: float
    ) -> None:
        status = response.status
        if tx is call.b_tx and 200 <= status < 300:
            # A retransmitted 2xx: our ACK was lost.
            if call.b_leg is not None and call.b_leg.ack is not None:
                self.layer.outgoing.append(call.b_leg.ack)
            return
        attempt = call.pending.get(tx)
        if attempt is None or call.state is CallState.ENDED or call.cancelled:
            # An abandoned attempt, or one answered after the caller gave up: close it.
            if 200 <= status < 300:
                self._ack_and_bye_stray(tx, response, now)
            elif 100 < status < 200 and tx.state is State.PROCEEDING:
                self.layer.send_cancel(tx, now)
            return
        if status < 200:
            if status == 100:
                return
            if call.ringing_time is None:
                call.ringing_time = now
            call.state = CallState.EARLY
            if attempt.media_id is not None and response.body:

                def answered(now: float, result: bytes | MediaFailure) -> None:
                    if attempt.status is not None or call.a_tx.answered or call.cancelled:
                        return  # the attempt or the call went on meanwhile
                    if isinstance(result, MediaFailure):
                        # The final answer is answered again; early media waits for it.
                        log.info("call %s: early media not relayed: %s", call.id, result)
                        result = b""
                    self._relay_provisional(call, response, result, now)

                self._answer_media(call, attempt, response, answered)
                return
            self._relay_provisional(call, response, response.body, now)
            return
        del call.pending[tx]
        attempt.ended = now
        attempt.status = status
        attempt.reason = response.reason
        if status < 300:
            call.answered_attempt = attempt
            counts = self.label_stats.get(attempt.destination.label)
            if counts is not None:
                counts[1] += 1
            call.b_tx = tx
            self._cancel_pending(call, now)  # the other forks lost
            if attempt.media_id is not None and response.body:
                # The caller's 200 waits for the relay's answer; meanwhile B's retransmitted
                # 2xx is absorbed (b_tx) and the no-answer timer must not fire.
                if call.no_answer_timer is not None:
                    call.no_answer_timer.cancel()

                def connected(now: float, result: bytes | MediaFailure) -> None:
                    if call.state is CallState.ENDED:
                        self._ack_and_bye_stray(tx, response, now)
                        return
                    if isinstance(result, MediaFailure):
                        self._ack_and_bye_stray(tx, response, now)
                        self._media_failed(call, attempt, result, now)
                        return
                    response.body = result
                    self._connect(call, tx, response, attempt, now)

                self._answer_media(call, attempt, response, connected)
                return
            self._connect(call, tx, response, attempt, now)
        else:
            self._media_forget(call, attempt.media_id)
            self._attempt_failed(call, status, response.reason, now)

    def _relay_provisional(self, call: Call, response: Response, body: bytes, now: float) -> None:
        relay = make_response(call.a_request, response.status, response.reason, call.a_tag)
        self._echo_record_route(call.a_request, relay)
        relay.headers.add("Contact", self._contact(call.a_tx.source))
        self._copy_headers(response, relay)
        if not body:
            relay.headers.remove("content-type")
        relay.body = body
        self.layer.respond(call.a_tx, relay, now)

    def _answer_media(
        self,
        call: Call,
        attempt: Attempt,
        response: Response,
        then: Callable[[float, bytes | MediaFailure], None],
    ) -> None:
        """The callee's answer SDP through the relay, then ``then`` with it rewritten."""
        assert attempt.media_id is not None and self.media is not None
        a_tag = call.a_request.from_.tag or ""
        ref = CallRef(attempt.media_id, a_tag, response.to.tag or "")
        # A callee behind NAT (a registered phone: its address is its binding's source).
        nat = _nat_source(response.body, attempt.destination.address.host)
        options = _options(attempt.destination.media, offer=False, nat_source=nat)
        self.media.answer(ref, response.body, options, self._later(then))

    def _connect(
        self,
        call: Call,
        tx: ClientTransaction,
        response: Response,
        attempt: Attempt,
        now: float,
    ) -> None:
        call.state = CallState.CONNECTED
        call.answer_time = now
        self.stats["answered"] += 1
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
        b_dialog = Dialog.as_uac(tx.request, response, self._contact(tx.dest))
        if tx.dest.reliable or attempt.destination.flow:
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
        if attempt.media_id is not None:
            call.media_id = attempt.media_id
            call.media_tags = (a_req.from_.tag or "", response.to.tag or "")

        if a_req.body:
            self._ack_b(call, None)
        else:
            call.deferred_b_ack = True  # delayed offer: the caller's ACK carries the answer
        ok = make_response(a_req, 200, response.reason, call.a_tag)
        self._echo_record_route(a_req, ok)
        ok.headers.add("Contact", self._contact(source))
        self._copy_headers(response, ok)
        ok.body = response.body
        self.layer.respond(call.a_tx, ok, now)

        try:
            call.session.answered(attempt.freeze(now))
        except Exception:
            log.exception("call %s: the policy failed on answer", call.id)
        limit = self.settings.max_call_duration
        granted = limit
        if call.session.max_duration is not None:
            granted = min(limit, call.session.max_duration)
        call.duration_timer = self.timers.schedule(now + granted, self._max_duration, call, limit)
        if self.settings.dialog_ping_interval > 0:
            call.ping_timer = self.timers.schedule(
                now + self.settings.dialog_ping_interval, self._ping, call
            )
        log.debug("call %s: answered by %s", call.id, attempt.destination.label)

    def _ack_b(self, call: Call, caller_ack: Request | None) -> None:
        leg = call.b_leg
        if leg is None:
            return
        ack = leg.dialog.create_request("ACK", cseq=1)
        if caller_ack is not None:
            self._copy_headers(caller_ack, ack)
            ack.body = caller_ack.body
        dest = leg.dialog.next_hop()
        leg.ack = (self.layer.send_stateless(ack, dest), dest)

    def _ack_and_bye_stray(self, tx: ClientTransaction, response: Response, now: float) -> None:
        dialog = Dialog.as_uac(tx.request, response, self._contact(tx.dest))
        if tx.dest.reliable:
            dialog.flow = tx.dest
        self.layer.send_stateless(
            dialog.create_request("ACK", cseq=tx.request.cseq.number), dialog.next_hop()
        )
        self.layer.send_request(dialog.create_request("BYE"), dialog.next_hop(), now)

    def _attempt_failed(self, call: Call, status: int, reason: str, now: float) -> None:
        if call.state is CallState.ENDED or call.pending:
            return  # other forks are still out: wait for them
        if call.session.fork:
            status, reason = _best_fork_answer(call)
            self._fail_call(call, status, reason, HangupSide.CALLEE, "rejected", now)
            return
        if status in self.settings.advance_on and not call.cancelled:
            log.debug("call %s: %s %s, advancing", call.id, status, reason)
            self._next_attempt(call, now)
            return
        self._fail_call(call, status, reason, HangupSide.CALLEE, "rejected", now)

    def _no_answer(self, now: float, call: Call, started: int) -> None:
        if len(call.attempts) != started or call.state in (CallState.CONNECTED, CallState.ENDED):
            return
        log.debug("call %s: no answer in %.0f s", call.id, self.settings.no_answer_timeout)
        for attempt in call.pending.values():
            attempt.ended = now
            attempt.status = 408
            attempt.reason = "No Answer"
        self._cancel_pending(call, now)  # abandoned if nothing was heard; a late 2xx gets a BYE
        self._attempt_failed(call, 408, "No Answer", now)

    def _cancel_pending(self, call: Call, now: float) -> None:
        for tx, attempt in call.pending.items():
            self.layer.send_cancel(tx, now)
            if attempt.status is None:
                attempt.ended = now
                attempt.status = 487
                attempt.reason = "Request Terminated"
            self._media_forget(call, attempt.media_id)
        call.pending.clear()

    def _cancel_b(self, call: Call, now: float) -> None:
        if call.state is not CallState.CONNECTED:
            self._cancel_pending(call, now)

    def _fail_call(
        self,
        call: Call,
        status: int,
        reason: str,
        side: HangupSide,
        why: str,
        now: float,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if call.state is CallState.ENDED:
            return
        if not call.a_tx.answered:
            response = make_response(call.a_request, status, reason, call.a_tag)
            for name, value in headers:
                response.headers.add(name, value)
            self.layer.respond(call.a_tx, response, now)
        call.final_status = status
        call.final_reason = reason
        call.hangup_side = side
        call.hangup_reason = why
        self._end(call, now)

    # --- in-dialog requests ---------------------------------------------------------------------

    def _in_dialog_request(
        self, leg: Leg, tx: ServerTransaction, request: Request, now: float
    ) -> None:
        call = leg.call
        other = call.b_leg if leg.side == "a" else call.a_leg
        method = request.method
        if method == "BYE":
            side = HangupSide.CALLER if leg.side == "a" else HangupSide.CALLEE
            log.debug("call %s: BYE from the %s", call.id, side)
            self._hangup(call, side, "bye", now, skip=leg, bye_tx=tx)
            return
        if other is None or call.state is not CallState.CONNECTED:
            self._respond(tx, 481, now)
            return
        if method == "OPTIONS" and request.headers.get("max-forwards") == "0":
            self._respond(tx, 200, now)
            return
        if call.media_id is not None and request.body and method in ("INVITE", "UPDATE"):
            if not self._bad_sdp(tx, request, now):
                self._reoffer_media(call, leg, other, tx, request, now)
            return
        self._relay_request(call, leg, other, tx, request, request.body, now)

    def _relay_request(
        self,
        call: Call,
        leg: Leg,
        other: Leg,
        tx: ServerTransaction,
        request: Request,
        body: bytes,
        now: float,
        media: bool = False,
    ) -> None:
        out = other.dialog.create_request(request.method)
        self._copy_headers(request, out)
        out.body = body
        relay = _Relay(self, call, tx, leg, other, request.method, media)
        self.layer.send_request(out, other.dialog.next_hop(), now, owner=relay)

    def _media_ref(self, call: Call, offerer: Leg) -> CallRef:
        """The relayed session as seen from the side that offers (a re-INVITE, an UPDATE)."""
        a_tag, b_tag = call.media_tags
        assert call.media_id is not None
        if offerer.side == "a":
            return CallRef(call.media_id, a_tag, b_tag)
        return CallRef(call.media_id, b_tag, a_tag)

    def _leg_source(self, call: Call, leg: Leg) -> str:
        """Where a leg's SIP comes from: the caller's first request, or the callee's address
        (a registered phone's binding source)."""
        attempt = call.answered_attempt
        if leg.side == "b" and attempt is not None:
            return attempt.destination.address.host
        return call.a_tx.source.host

    def _media_settings(self, call: Call) -> MediaSettings:
        attempt = call.answered_attempt
        return attempt.destination.media if attempt is not None else MediaSettings()

    def _reoffer_media(
        self, call: Call, leg: Leg, other: Leg, tx: ServerTransaction, request: Request, now: float
    ) -> None:
        """A re-INVITE or UPDATE with SDP in a relayed call: the session is updated (a new
        offer from that side), and the request goes on with the relay's SDP."""
        media = self.media
        assert media is not None

        def offered(now: float, result: bytes | MediaFailure) -> None:
            if tx.answered:
                return
            if call.state is not CallState.CONNECTED:
                self._respond(tx, 481, now)
            elif isinstance(result, MediaFailure):
                response = make_response(request, result.status, None, self.ids.next())
                response.headers.add("Reason", _reason_header(result.status, str(result)))
                self.layer.respond(tx, response, now)
            else:
                self._relay_request(call, leg, other, tx, request, result, now, media=True)

        settings = self._media_settings(call)
        ref = self._media_ref(call, leg)
        # The offerer behind NAT keeps its media sent to its SIP source, as on the first offer.
        nat = _nat_source(request.body, tx.source.host)
        options = _options(settings, offer=True, nat_source=nat)
        media.offer(ref, request.body, options, self._later(offered))

    def _relay_response(
        self, relay: _Relay, tx: ClientTransaction, response: Response, now: float
    ) -> None:
        status = response.status
        call = relay.call
        if relay.server_tx is None:
            # One of our own requests (a ping): a 481 or 408 means the leg is gone.
            if status >= 200:
                _ping_over(relay.to_leg)
            if status in (408, 481) and call.state is CallState.CONNECTED:
                self._hangup(call, HangupSide.SWITCH, "leg not responding", now, skip=relay.to_leg)
            return
        server_tx = relay.server_tx
        if status == 100 or server_tx.answered:
            return
        media = self.media
        if (
            relay.media
            and media is not None
            and response.body
            and status < 300
            and relay.from_leg is not None
            and call.media_id is not None
        ):
            # The answer to a re-offer: through the relay before it goes back.
            ref = self._media_ref(call, relay.from_leg)  # from the offerer, to the answerer

            def answered(now: float, result: bytes | MediaFailure) -> None:
                if server_tx.answered:
                    return
                if isinstance(result, MediaFailure):
                    log.warning("call %s: re-offer not answered by the relay: %s", call.id, result)
                    result = response.body  # better the callee's SDP than a dropped update
                self._relay_final(relay, server_tx, tx, response, result, now)

            nat = _nat_source(response.body, self._leg_source(call, relay.to_leg))
            options = _options(self._media_settings(call), offer=False, nat_source=nat)
            media.answer(ref, response.body, options, self._later(answered))
            return
        self._relay_final(relay, server_tx, tx, response, response.body, now)

    def _relay_final(
        self,
        relay: _Relay,
        server_tx: ServerTransaction,
        tx: ClientTransaction,
        response: Response,
        body: bytes,
        now: float,
    ) -> None:
        call = relay.call
        status = response.status
        request = server_tx.request
        out = make_response(request, status, response.reason)
        self._copy_headers(response, out)
        out.body = body
        if relay.method == "INVITE" and 200 <= status < 300:
            out.headers.add(
                "Contact", relay.from_leg.dialog.local_contact if relay.from_leg else ""
            )
            if relay.from_leg is not None:
                key = (relay.from_leg.side, request.cseq.number)
                call.pending_acks[key] = PendingAck(
                    server_tx, relay.to_leg, tx.request.cseq.number, tx
                )
                # Let go of once the caller's ACK is relayed (see ``ack``); until then its 2xx
                # again is absorbed (``server_tx`` answered).
            else:
                # Its 2xx again is absorbed: lingering until Timer M, the transaction need
                # not keep the relay and its call.
                self.layer.let_go(tx)
        self.layer.respond(server_tx, out, now)
        if status == 481 and call.state is CallState.CONNECTED:
            self._hangup(call, HangupSide.SWITCH, "dialog gone", now, skip=relay.to_leg)

    # --- ending ---------------------------------------------------------------------------------

    def _max_duration(self, now: float, call: Call, limit: float) -> None:
        if call.state is not CallState.CONNECTED:
            return
        extra = 0.0
        if call.answer_time is not None and now - call.answer_time < limit:
            try:
                extra = call.session.extend(now)
            except Exception:
                log.exception("call %s: the policy failed to extend the call", call.id)
        if extra > 0:
            # From the end of the slice that ran out, not from now: a timer that fires late
            # (a busy loop) must not lengthen the call by its lateness at every slice.
            timer = call.duration_timer
            start = timer.deadline if timer is not None else now
            call.duration_timer = self.timers.schedule(
                start + extra, self._max_duration, call, limit
            )
            return
        log.debug("call %s: maximum duration reached", call.id)
        self._hangup(call, HangupSide.SWITCH, "max duration", now)

    def _ping(self, now: float, call: Call) -> None:
        if call.state is not CallState.CONNECTED:
            return
        for leg in (call.a_leg, call.b_leg):
            # One ping at a time per leg: a leg slow to answer is not flooded meanwhile.
            if leg is not None and not leg.pinging:
                leg.pinging = True
                ping = leg.dialog.create_request("OPTIONS")
                relay = _Relay(self, call, None, None, leg, "OPTIONS")
                self.layer.send_request(ping, leg.dialog.next_hop(), now, owner=relay)
                if self.settings.dialog_ping_timeout < TIMER_F:
                    leg.ping_timer = self.timers.schedule(
                        now + self.settings.dialog_ping_timeout, self._ping_unanswered, leg
                    )
        call.ping_timer = self.timers.schedule(
            now + self.settings.dialog_ping_interval, self._ping, call
        )

    def _ping_unanswered(self, now: float, leg: Leg) -> None:
        leg.ping_timer = None
        leg.pinging = False
        call = leg.call
        if call.state is CallState.CONNECTED:
            log.info("call %s: no answer to the ping of leg %s", call.id, leg.side)
            # The silent leg gets a BYE too, as when its OPTIONS times out.
            self._hangup(call, HangupSide.SWITCH, "leg not responding", now)

    def _hangup(
        self,
        call: Call,
        side: HangupSide,
        why: str,
        now: float,
        skip: Leg | None = None,
        bye_tx: ServerTransaction | None = None,
    ) -> None:
        """End a connected call: BYE to every leg but ``skip`` (the one that hung up, whose
        BYE ``bye_tx`` is answered). Both wait until the call's CDR is durable, so a party
        that saw the call end can count on its record."""
        if call.state is CallState.ENDED:
            if bye_tx is not None:
                self._respond(bye_tx, 200, now)
            return
        call.final_status = 200
        call.final_reason = "OK"
        call.hangup_side = side
        call.hangup_reason = why

        legs = (call.a_leg, call.b_leg)  # _end lets go of them before this runs

        def finish(now: float) -> None:
            if bye_tx is not None:
                self._respond(bye_tx, 200, now)
            for leg in legs:
                if leg is not None and leg is not skip:
                    bye = leg.dialog.create_request("BYE")
                    relay = _Relay(self, call, None, None, leg, "BYE")
                    self.layer.send_request(bye, leg.dialog.next_hop(), now, owner=relay)

        self._end(call, now, finish)

    def _end(self, call: Call, now: float, finish: Callable[[float], None] | None = None) -> None:
        call.state = CallState.ENDED
        call.end_time = now
        for timer in (call.no_answer_timer, call.duration_timer, call.ping_timer):
            if timer is not None:
                timer.cancel()
        self.calls.pop(self._call_key(call), None)
        for media_id in list(call.media_ids):
            self._media_forget(call, media_id)
        for leg in (call.a_leg, call.b_leg):
            if leg is not None:
                self.dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)
                _ping_over(leg)
        self._let_go_of_invites(call)
        # Each leg points back at the call (for its in-dialog requests, found through
        # ``dialogs``, gone now): a reference cycle that refcounting never frees, so every
        # ended call would wait, with its dialogs, requests and attempts, for a full
        # collection, and make those come sooner and take longer. What still concerns a
        # leg (a BYE's answer, a ping's) reaches it through its own owner.
        call.a_leg = call.b_leg = None
        done = _Completion(finish, now, self.resume)
        try:
            call.session.ended(call.summary(), done)
        except Exception:
            log.exception("call %s: the policy failed to close the call", call.id)
            done()
        done.inline = False
        if self.observer is not None:
            self.observer.call_ended(call.id, now)

    def _let_go_of_invites(self, call: Call) -> None:
        """The call's two INVITE transactions linger 64*T1 after their 2xx (Timers L and M,
        RFC 6026), each with an owner that reaches the call: they let go of it at its end, or
        every call would stay alive 32 s after it, for each full collection to walk.

        The caller's has nothing left to tell: a CANCEL after the answer, or an ACK never
        come, changes nothing in an ended call. The answered one hears the callee's 2xx
        again if our ACK was lost: the layer sends it the same ACK, as during the call."""
        self.layer.let_go(call.a_tx)
        for pending in call.pending_acks.values():
            self.layer.let_go(pending.client_tx)  # a re-INVITE's 2xx the caller never ACKed
        tx, leg = call.b_tx, call.b_leg
        if tx is None or leg is None:
            # Answered but not yet connected: the relay's answer to the callee's SDP is still
            # to come, and then the callee gets its ACK and BYE (built from ``tx``).
            return
        self.layer.let_go(tx, ack=leg.ack)

    def hangup(self, key: str, now: float) -> bool:
        """Operator hang-up (web UI, shutdown): end the call whatever its state."""
        call = self.calls.get(key)
        if call is None:
            return False
        if call.state is CallState.CONNECTED:
            self._hangup(call, HangupSide.SWITCH, "operator", now)
        else:
            self._cancel_b(call, now)
            self._fail_call(call, 503, "Service Unavailable", HangupSide.SWITCH, "operator", now)
        return True

    def shutdown(self, now: float) -> None:
        for key in list(self.calls):
            self.hangup(key, now)

    def _respond(
        self, tx: ServerTransaction, status: int, now: float, reason: str | None = None
    ) -> None:
        if tx.answered:
            return  # the layer would drop it; an answered transaction lets go of its request
        self.layer.respond(tx, make_response(tx.request, status, reason, self.ids.next()), now)


class _CallInvites:
    """The owner of a call's INVITE transactions: the caller's (a CANCEL, a 2xx never ACKed)
    and ours to each destination (their answers)."""

    __slots__ = ("b2bua", "call")

    def __init__(self, b2bua: B2BUA, call: Call) -> None:
        self.b2bua = b2bua
        self.call = call

    def on_cancel(self, tx: ServerTransaction, now: float) -> None:
        self.b2bua._caller_cancelled(self.call, now)

    def on_ack_timeout(self, tx: ServerTransaction, now: float) -> None:
        self.b2bua._caller_never_acked(self.call, now)

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        self.b2bua._b_invite_response(self.call, tx, response, now)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        self.b2bua._b_invite_timeout(self.call, tx, now)


@dataclass(slots=True, eq=False)
class _Relay:
    """An in-dialog request passed from one leg to the other, or one of the switch's own (a
    ping, a BYE: no ``server_tx``), awaiting its answer: the owner of its transaction."""

    b2bua: B2BUA
    call: Call
    server_tx: ServerTransaction | None
    from_leg: Leg | None
    to_leg: Leg
    method: str
    media: bool = False  # a re-offer through the relay: its answer goes through it too

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        self.b2bua._relay_response(self, tx, response, now)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        self.b2bua._relay_timeout(self, now)


class _Completion:
    """The ``done`` the policy calls once a call's CDR is durable: runs the call's ``finish``
    (the held-back BYEs and 200) once. Called while the policy is still closing the call (a
    synchronous sink), it runs at the call's ``now``; called later (the outbox's fsync), it
    goes through ``resume``, which gives it the time and sends what it queued."""

    __slots__ = ("_called", "_finish", "_now", "_resume", "inline")

    def __init__(self, finish: Callable[[float], None] | None, now: float, resume: Resume) -> None:
        self._finish = finish
        self._now = now
        self._resume = resume
        self._called = False
        self.inline = True

    def __call__(self) -> None:
        if self._called or self._finish is None:
            return
        self._called = True
        if self.inline:
            self._finish(self._now)
        else:
            self._resume(self._finish)


def _ping_over(leg: Leg) -> None:
    """The leg's ping is answered or given up: the next may go, and its deadline is off."""
    leg.pinging = False
    if leg.ping_timer is not None:
        leg.ping_timer.cancel()
        leg.ping_timer = None


def _cannot_resume(work: Callable[[float], None]) -> None:
    raise RuntimeError("a call was completed after its input: the B2BUA needs a resume hook")


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


_PHRASES = {400: "Bad Request", 488: "Not Acceptable Here", 500: "Server Internal Error"}


def _is_sdp(message: SipMessage) -> bool:
    content_type = message.headers.get("content-type")
    if content_type is None:
        return True  # a body without a type: SDP is the only one an INVITE carries here
    return content_type.split(";", 1)[0].strip().lower() == "application/sdp"


def _reason_header(status: int, text: str) -> str:
    """A Reason header (RFC 3326) for a refusal of ours: the cause and what went wrong."""
    cleaned = text.replace("\\", "").replace('"', "'").replace("\r", " ").replace("\n", " ")
    return f'SIP;cause={status};text="{cleaned[:200]}"'


def _options(
    settings: MediaSettings, *, offer: bool, nat_source: str | None = None
) -> MediaOptions:
    """How the relay rewrites an SDP of a call with these settings: only the allowed codecs
    in an offer (the recipient never sees the others), recording from the first offer; for a
    party behind NAT (``nat_source``: where its SIP comes from), media sent there."""
    codecs = settings.codecs if offer else ()
    return MediaOptions(
        codec_strip=("all",) if codecs else (),
        codec_except=codecs,
        record_call=settings.record and offer,
        received_from=nat_source,
        sip_source_address=nat_source is not None,
    )


# Addresses only a NAT'd party writes in its SDP: RFC 1918, RFC 6598 (carrier-grade NAT), and
# RFC 4193 unique local IPv6.
_NAT_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def _nat_source(sdp: bytes, source: str) -> str | None:
    """``source`` (the SIP source address of the party whose SDP this is) when the SDP names
    a private address that is not it: the party is behind NAT and its media will come from
    the NAT's public address, not from the one it wrote (Kamailio's ``nat_uac_test`` 8).

    The relay is then told to trust the SIP source address (rtpengine's ``SIP-source-address``
    with ``received-from``): it sends to the NAT from the first packet, and its endpoint
    learning (symmetric RTP, rtpengine's default) follows the port the NAT really uses."""
    try:
        description = SessionDescription.parse(sdp)
        source_ip = ipaddress.ip_address(source)
    except (SdpError, ValueError):
        return None
    connections = [description.connection, *(m.connection for m in description.media)]
    for connection in connections:
        if connection is None:
            continue
        try:
            address = ipaddress.ip_address(connection.host)
        except ValueError:
            continue  # a host name: nothing to say
        if address != source_ip and any(address in net for net in _NAT_NETWORKS):
            return source
    return None
