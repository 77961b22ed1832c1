"""The real SIP application driven with bytes and a clock of the test's own.

:class:`Switch` is the node's :class:`SipApplication` with no socket: :meth:`Switch.receive`
feeds it a message at :attr:`Switch.now`, :meth:`Switch.advance` fires its timers at their
deadlines, and what it sends is parsed and kept by destination until the test takes it.
:class:`Phone` is a user agent at an address, building its requests and answers by hand (its
dialog with :class:`~smartswitch.sip.dialog.Dialog`, as a real phone would). Nothing sleeps
and nothing touches the network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from smartswitch.b2bua.application import SipApplication
from smartswitch.b2bua.engine import B2buaSettings
from smartswitch.b2bua.ports import (
    CallAttempt,
    CallPolicy,
    CallSummary,
    Destination,
    Rejection,
)
from smartswitch.sip.dialog import Dialog
from smartswitch.sip.message import Headers, Request, Response, make_response, parse_message
from smartswitch.sip.transaction import Address

SWITCH = Address("udp", "198.51.100.1", 5060)
ALICE = Address("udp", "192.0.2.10", 5060)  # the caller
BOB = Address("udp", "192.0.2.20", 5060)  # the first destination
CAROL = Address("udp", "192.0.2.30", 5060)  # the second
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"

Message = Request | Response


# --- a policy whose calls the test can watch --------------------------------------------------


@dataclass
class Session:
    """A :class:`~smartswitch.b2bua.ports.CallSession` that writes down what it is told. With
    ``hold``, it keeps ``done`` for the test to call (a CDR not yet durable)."""

    destinations: tuple[Destination, ...]
    fork: bool = False
    max_duration: float | None = None
    hold: bool = False
    answers: list[CallAttempt] = field(default_factory=list)
    summaries: list[CallSummary] = field(default_factory=list)
    held: list[Callable[[], None]] = field(default_factory=list)

    def answered(self, attempt: CallAttempt) -> None:
        self.answers.append(attempt)

    def extend(self, now: float) -> float:
        return 0.0

    def ended(self, summary: CallSummary, done: Callable[[], None]) -> None:
        self.summaries.append(summary)
        if self.hold:
            self.held.append(done)
        else:
            done()

    @property
    def summary(self) -> CallSummary:
        (summary,) = self.summaries
        return summary


@dataclass
class Calls:
    """Every call to the same destinations (tried in order, or forked)."""

    destinations: tuple[Address, ...]
    fork: bool = False
    hold: bool = False
    sessions: list[Session] = field(default_factory=list)

    def route(self, request: Request, source: Address, now: float) -> Session | Rejection:
        callee = request.sip_uri.user or ""
        caller = request.from_.sip_uri().user or "anonymous"
        session = Session(
            tuple(
                Destination(f"sip:{callee}@{a.host}:{a.port}", a, callee, caller, f"peer{n}")
                for n, a in enumerate(self.destinations)
            ),
            fork=self.fork,
            hold=self.hold,
        )
        self.sessions.append(session)
        return session

    @property
    def session(self) -> Session:
        (session,) = self.sessions
        return session


# --- the switch -------------------------------------------------------------------------------


class Switch:
    """A :class:`SipApplication` at :data:`SWITCH`, fed by the test at :attr:`now`."""

    def __init__(self, policy: CallPolicy, settings: B2buaSettings | None = None) -> None:
        local = {"udp": (SWITCH.host, SWITCH.port), "tcp": (SWITCH.host, SWITCH.port)}
        # No in-dialog pings unless a test asks: they would mix with what it watches.
        self.sip = SipApplication(policy, local, settings or B2buaSettings(dialog_ping_interval=0))
        self.layer = self.sip.layer
        self.b2bua = self.sip.b2bua
        self.now = 0.0
        self.sent: list[tuple[Message, Address]] = []
        # The transport's part: work that starts outside any input (a CDR made durable
        # later) runs at the test's clock, and what it sends is collected like the rest.
        self.b2bua.resume = self.run

    def run(self, work: Callable[[float], object]) -> None:
        """Run ``work`` at :attr:`now` outside any input, as the transport's ``run`` does."""
        work(self.now)
        self._collect()

    def _collect(self) -> None:
        for data, dest in self.layer.drain():
            self.sent.append((parse_message(data), dest))

    def receive(self, data: bytes, source: Address) -> None:
        self.layer.receive(data, source, self.now)
        self._collect()

    def advance(self, until: float, late: float = 0.0) -> None:
        """Fire every timer due up to ``until``, each ``late`` seconds after its deadline."""
        while (deadline := self.layer.timers.next_deadline()) is not None and deadline <= until:
            self.now = deadline + late
            self.layer.handle_timer(self.now)
            self._collect()
        self.now = max(self.now, until)

    def take(self, dest: Address) -> list[Message]:
        """What the switch sent to ``dest`` since last asked."""
        taken = [m for m, d in self.sent if d == dest]
        self.sent = [(m, d) for m, d in self.sent if d != dest]
        return taken

    def take_all(self) -> list[tuple[Message, Address]]:
        sent, self.sent = self.sent, []
        return sent

    def request(self, dest: Address, method: str) -> Request:
        """The one request the switch sent to ``dest`` (with any responses it sent there)."""
        (request,) = [m for m in self.take(dest) if isinstance(m, Request) and m.method == method]
        return request

    def responses(self, dest: Address) -> list[int]:
        """The status codes the switch sent to ``dest``, taken."""
        return [m.status for m in self.take(dest) if isinstance(m, Response)]

    def final(self, dest: Address, method: str = "INVITE") -> Response:
        """The one final response to a ``method`` the switch sent to ``dest`` (what else it
        sent there is taken too)."""
        messages = self.take(dest)
        (final,) = [
            m
            for m in messages
            if isinstance(m, Response) and m.status >= 200 and m.cseq.method == method
        ]
        return final


# --- phones -----------------------------------------------------------------------------------


class Phone:
    """A user agent at ``address``: the caller (:meth:`call`) or a destination
    (:meth:`answer`). Each request of its own gets a Via with a fresh branch."""

    def __init__(self, switch: Switch, address: Address, user: str) -> None:
        self.switch = switch
        self.address = address
        self.user = user
        self.tag = f"{user}-tag"
        self.dialog: Dialog | None = None
        self.invite: Request | None = None  # the INVITE it sent, as it sent it
        self._branches = itertools.count(1)

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.address.host}:{self.address.port}>"

    def send(self, request: Request) -> Request:
        branch = f"z9hG4bK{self.user}{next(self._branches)}"
        via = f"SIP/2.0/UDP {self.address.host}:{self.address.port};branch={branch}"
        request.headers.add("Via", via, first=True)
        request.invalidate()
        self.switch.receive(request.to_bytes(), self.address)
        return request

    # --- the caller

    def call(self, callee: str = "15551234567", body: bytes = SDP) -> Request:
        """An INVITE to the switch (no body: a delayed offer)."""
        invite = new_request(
            "INVITE",
            f"sip:{callee}@{SWITCH.host}",
            f"<sip:{self.user}@{self.address.host}>;tag={self.tag}",
            f"<sip:{callee}@{SWITCH.host}>",
            f"call-{self.user}@{self.address.host}",
            ("Contact", self.contact),
        )
        _with_body(invite, body)
        self.invite = self.send(invite)
        return self.invite

    def cancel(self) -> None:
        """CANCEL its INVITE: the same branch, hop by hop (RFC 3261 9.1)."""
        assert self.invite is not None
        headers = Headers()
        for key, name, value in self.invite.headers.items():
            if key in ("via", "from", "to", "call-id", "max-forwards"):
                headers.add(name, value)
        headers.add("CSeq", f"{self.invite.cseq.number} CANCEL")
        cancel = Request("CANCEL", self.invite.uri, headers)
        self.switch.receive(cancel.to_bytes(), self.address)

    def ack_failure(self, response: Response) -> None:
        """The ACK of a 3xx-6xx to its INVITE, in the INVITE's transaction (17.1.1.3)."""
        assert self.invite is not None
        headers = Headers()
        headers.add("Via", str(self.invite.top_via))
        for key, name, value in self.invite.headers.items():
            if key in ("from", "call-id", "max-forwards"):
                headers.add(name, value)
        headers.add("To", response.headers.get("to") or "")
        headers.add("CSeq", f"{self.invite.cseq.number} ACK")
        ack = Request("ACK", self.invite.uri, headers)
        self.switch.receive(ack.to_bytes(), self.address)

    def connected(self, ok: Response, body: bytes = b"") -> Request:
        """Take the switch's 2xx: the dialog, and the ACK (with the answer of a delayed
        offer in ``body``)."""
        assert self.invite is not None
        self.dialog = Dialog.as_uac(self.invite, ok, self.contact)
        return self.ack(ok, body)

    def ack(self, ok: Response, body: bytes = b"") -> Request:
        """The ACK of a 2xx, end to end in the dialog, with the CSeq of the INVITE it ends."""
        assert self.dialog is not None
        ack = self.dialog.create_request("ACK", cseq=ok.cseq.number)
        _with_body(ack, body)
        return self.send(ack)

    # --- either side

    def request(self, method: str, body: bytes = b"") -> Request:
        """A request within its dialog (BYE, re-INVITE, INFO, UPDATE ...)."""
        assert self.dialog is not None
        request = self.dialog.create_request(method)
        _with_body(request, body)
        return self.send(request)

    def answer(self, request: Request, status: int, body: bytes = b"") -> Response:
        """Answer ``request`` (as the switch sent it); its 2xx to a first INVITE makes the
        dialog of a destination."""
        response = make_response(request, status, None, self.tag)
        if request.method == "INVITE" and 100 < status < 300:
            response.headers.add("Contact", self.contact)
        _with_body(response, body)
        if request.method == "INVITE" and 200 <= status < 300 and self.dialog is None:
            self.dialog = Dialog.as_uas(request, self.tag, self.contact)
        self.switch.receive(response.to_bytes(), self.address)
        return response


def new_request(
    method: str, uri: str, from_: str, to: str, call_id: str, *extra: tuple[str, str]
) -> Request:
    """A request outside any dialog, as a UA starts it (its Via is the sender's to add):
    From (with its tag) and To as given, CSeq 1, Max-Forwards 70, then ``extra`` headers."""
    headers = Headers()
    for name, value in (
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"1 {method}"),
        ("Max-Forwards", "70"),
        *extra,
    ):
        headers.add(name, value)
    return Request(method, uri, headers)


def _with_body(message: Message, body: bytes) -> None:
    if body:
        message.headers.add("Content-Type", "application/sdp")
        message.body = body


def connect(switch: Switch, caller: Phone, callee: Phone) -> tuple[Request, Response]:
    """A call from ``caller`` answered by ``callee`` (which the policy tries first), ACKed:
    the INVITE as ``callee`` got it and the 200 as ``caller`` got it."""
    caller.call()
    invite = switch.request(callee.address, "INVITE")
    callee.answer(invite, 180)
    callee.answer(invite, 200, SDP)
    assert switch.request(callee.address, "ACK").cseq.number == 1
    ok = switch.final(caller.address)
    assert ok.status == 200
    caller.connected(ok)
    assert switch.take_all() == []
    return invite, ok
