"""Dialogs (RFC 3261 section 12): the state two user agents share, and in-dialog requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from smartswitch.sip.errors import SipParseError
from smartswitch.sip.message import Headers, Request, Response
from smartswitch.sip.transaction import Address, shared_address
from smartswitch.sip.uri import NameAddr, SipUri, default_port


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the From value we send, without its tag
    remote_uri: str  # the To value we send, without its tag
    remote_target: str  # the peer's Contact URI
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    local_contact: str = ""
    flow: Address | None = None  # send here instead of resolving the target (NAT, TCP flows)

    @classmethod
    def as_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The dialog a 2xx or 1xx-with-tag creates for the request we sent (12.1.2)."""
        contacts = response.contacts()
        target = contacts[0].uri if contacts else request.uri
        routes = [str(r) for r in _name_addrs(response.headers.get_all("record-route"))]
        routes.reverse()
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=target,
            route_set=routes,
            local_seq=request.cseq.number,
            local_contact=local_contact,
        )

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, local_contact: str) -> Dialog:
        """The dialog our response with ``local_tag`` creates for a received request (12.1.1)."""
        contacts = request.contacts()
        if not contacts:
            raise SipParseError("dialog-creating request without Contact")
        routes = [str(r) for r in _name_addrs(request.headers.get_all("record-route"))]
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=contacts[0].uri,
            route_set=routes,
            local_seq=0,
            remote_seq=request.cseq.number,
            local_contact=local_contact,
        )

    def create_request(self, method: str, cseq: int | None = None) -> Request:
        """A request within the dialog (12.2.1.1); Via is the transaction layer's to add."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        headers = Headers()
        items = headers._items
        items.append(("from", "From", f"{self.local_uri};tag={self.local_tag}"))
        items.append(("to", "To", f"{self.remote_uri};tag={self.remote_tag}"))
        items.append(("call-id", "Call-ID", self.call_id))
        items.append(("cseq", "CSeq", f"{cseq} {method}"))
        items.append(("max-forwards", "Max-Forwards", "70"))
        uri = self.remote_target
        if self.route_set:
            first = NameAddr.parse(self.route_set[0])
            if "lr" in first.sip_uri().params:
                for route in self.route_set:
                    items.append(("route", "Route", route))
            else:
                # Strict routing (RFC 2543 peers): the first route becomes the Request-URI.
                uri = first.uri
                for route in self.route_set[1:]:
                    items.append(("route", "Route", route))
                items.append(("route", "Route", f"<{self.remote_target}>"))
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER") and self.local_contact:
            items.append(("contact", "Contact", self.local_contact))
        return Request(method, uri, headers)

    def next_hop(self) -> Address:
        """Where in-dialog requests go: the flow if pinned, else the first route or the target."""
        if self.flow is not None:
            return self.flow
        target = NameAddr.parse(self.route_set[0]).uri if self.route_set else self.remote_target
        return uri_address(SipUri.parse(target))


def uri_address(uri: SipUri) -> Address:
    """The transport address a SIP URI names (no DNS: hosts are expected to be addresses)."""
    transport = uri.transport
    if uri.scheme == "sips" and transport == "udp":
        transport = "tls"
    port = uri.port or default_port(transport)
    return shared_address(transport, uri.host, port)


def _name_addrs(values: list[str]) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in values]


def _without_tag(addr: NameAddr) -> str:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    return str(NameAddr(addr.uri, addr.display, params))
