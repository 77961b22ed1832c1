"""The node's SIP application: the one transaction user of its transaction layer.

Every request the layer hands up is dispatched here by what it is (RFC 3261 8.2.1): within a
dialog (a To tag) or an INVITE, to the :class:`~smartswitch.b2bua.engine.B2BUA`; a REGISTER,
to the registrar when the node has one (:class:`~smartswitch.b2bua.ports.Registrations`);
an OPTIONS outside any dialog is answered here (11.2). What happens later to a transaction
(its answers, a timeout, a CANCEL, a 2xx never ACKed) goes to the transaction's owner, a
typed :class:`~smartswitch.sip.transaction.ClientOwner` or
:class:`~smartswitch.sip.transaction.ServerOwner`: a call's INVITE, a relayed request, an
outbound registration.
"""

from __future__ import annotations

from smartswitch.b2bua.engine import B2BUA, B2buaSettings
from smartswitch.b2bua.ports import CallPolicy, InviteGate, Registrations, Rejection
from smartswitch.sip.message import Request, Response, make_response
from smartswitch.sip.transaction import (
    Address,
    ClientTransaction,
    ServerTransaction,
    TransactionLayer,
)

__all__ = ["ALLOW", "SipApplication"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE"

# Requests that only make sense within a dialog: outside one, the dialog does not exist.
_DIALOG_ONLY = frozenset(("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER"))


class SipApplication:
    """The transaction layer, the B2BUA on it, and the registrar once one is attached."""

    def __init__(
        self,
        policy: CallPolicy,
        local: dict[str, tuple[str, int]],
        settings: B2buaSettings | None = None,
    ) -> None:
        """``local`` maps a transport ("udp", "tcp") to the host and port of our Via."""
        self.layer = TransactionLayer(self, local)
        self.b2bua = B2BUA(policy, self.layer, settings)
        self.registrations: Registrations | None = None
        # Set while the node drains (``smartswitch drain``): new calls are refused with 503
        # and this many seconds of Retry-After (RFC 3261 21.5.4), so the caller or its proxy
        # tries another node; calls in progress and everything in a dialog go on.
        self.refusing_calls: int | None = None
        # A node behind the dispatcher (docs/cluster.md, "Automatic load balancing"): its
        # real-source header and redirect tokens are checked here, before routing.
        self.gate: InviteGate | None = None

    def refuse_new_calls(self, retry_after: int) -> None:
        """From now on answer every new INVITE 503 with ``Retry-After: retry_after``."""
        self.refusing_calls = max(0, int(retry_after))

    # --- TransactionUser ------------------------------------------------------------------------

    def on_request(self, tx: ServerTransaction, request: Request, now: float) -> None:
        if request.to.tag:
            self.b2bua.in_dialog(tx, request, now)
            return
        method = request.method
        if method == "INVITE":
            if self.refusing_calls is not None:
                self.b2bua.stats["rejected"] += 1
                self._answer(tx, 503, now, ("Retry-After", str(self.refusing_calls)))
                return
            if self.gate is None:
                self.b2bua.invite(tx, request, now)
                return
            verdict = self.gate.admit(request, tx.source, now)
            if isinstance(verdict, Rejection):
                self.b2bua.stats["rejected"] += 1
                self._answer(tx, verdict.status, now, *verdict.headers, reason=verdict.reason)
                return
            self.b2bua.invite(tx, request, now, verdict)
        elif method == "REGISTER" and self.registrations is not None:
            response = self.registrations.register(request, tx.source, now)
            if response.status < 300:
                tx.metered = False  # its password checked: the binding list may be long
            self.layer.respond(tx, response, now)
        elif method == "OPTIONS":
            self._answer(tx, 200, now, ("Allow", ALLOW), ("Accept", "application/sdp"))
        elif method in _DIALOG_ONLY:
            self._answer(tx, 481, now)
        else:
            self._answer(tx, 405, now, ("Allow", ALLOW))

    def on_ack(self, request: Request, source: Address, now: float) -> None:
        self.b2bua.ack(request, source, now)

    def on_cancel(self, invite_tx: ServerTransaction, now: float) -> None:
        if invite_tx.owner is not None:
            invite_tx.owner.on_cancel(invite_tx, now)

    def on_ack_timeout(self, tx: ServerTransaction, now: float) -> None:
        if tx.owner is not None:
            tx.owner.on_ack_timeout(tx, now)

    def on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        if tx.owner is not None:
            tx.owner.on_response(tx, response, now)

    def on_timeout(self, tx: ClientTransaction, now: float) -> None:
        if tx.owner is not None:
            tx.owner.on_timeout(tx, now)

    def _answer(
        self,
        tx: ServerTransaction,
        status: int,
        now: float,
        *headers: tuple[str, str],
        reason: str | None = None,
    ) -> None:
        response = make_response(tx.request, status, reason, self.layer.ids.next())
        for name, value in headers:
            response.headers.add(name, value)
        self.layer.respond(tx, response, now)
