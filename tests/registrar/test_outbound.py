"""The outbound registration client, driven through a real transaction layer and a clock.

A small registrar written here answers the client's REGISTERs: it parses what the layer put
in ``outgoing`` and feeds its answer back with ``layer.receive``; time moves only when the
test calls ``layer.handle_timer``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from smartswitch.b2bua.application import SipApplication
from smartswitch.model.config import NodeAccount, Peer, PeerRole, SupplierRegistration
from smartswitch.registrar.outbound import (
    OutboundClient,
    OutboundRegistrations,
    OutboundState,
    OutboundTarget,
    refresh_delay,
)
from smartswitch.sip.digest import DigestAuthenticator, compute_ha1
from smartswitch.sip.message import Request, make_response, parse_message
from smartswitch.sip.transaction import Address

SUPPLIER = Address("udp", "203.0.113.5", 5070)
REALM = "supplier.example"
USER, PASSWORD = "trunk1", "s3cret"


class _NoCalls:
    def route(self, *args: Any) -> Any:
        raise AssertionError("no calls here")


def _peer(nodes: frozenset[str] = frozenset(), **register: Any) -> Peer:
    spec: dict[str, Any] = {
        "username": USER,
        "password": PASSWORD,
        "registrar": "203.0.113.5:5070",
        "expires": 120,
    }
    spec.update(register)
    return Peer(
        id=7,
        name="carrier",
        role=PeerRole.SUPPLIER,
        account_id=1,
        tariff_id=None,
        address="203.0.113.5:5070",
        register=SupplierRegistration(**spec),
        nodes=nodes,
    )


class Registrar:
    """The supplier's side: challenges, checks credentials, answers with a script."""

    def __init__(self, sip: SipApplication) -> None:
        self.layer = sip.layer
        self.auth = DigestAuthenticator(REALM, b"supplier-secret-0123456789", algorithms=("MD5",))
        self.received: list[Request] = []

    def take(self) -> Request:
        """The one REGISTER the client has just sent."""
        out = self.layer.drain()
        assert len(out) == 1, out
        data, dest = out[0]
        assert dest == SUPPLIER
        request = parse_message(data)
        assert isinstance(request, Request) and request.method == "REGISTER"
        self.received.append(request)
        return request

    def answer(self, request: Request, status: int, now: float, **headers: str) -> None:
        response = make_response(request, status, None, "sup1")
        for name, value in headers.items():
            response.headers.add(name.replace("_", "-"), value)
        self.layer.receive(response.to_bytes(), SUPPLIER, now)

    def challenge(self, request: Request, now: float, stale: bool = False) -> None:
        [value] = self.auth.challenge(now, stale=stale)
        self.answer(request, 401, now, WWW_Authenticate=value)

    def verify(self, request: Request, now: float, password: str = PASSWORD) -> bool:
        credentials = request.headers.get("authorization")
        if credentials is None:
            return False
        ha1 = compute_ha1(USER, REALM, password, "MD5")
        return self.auth.verify("REGISTER", credentials, lambda *_: ha1, now).ok

    def ok(self, request: Request, now: float, expires: int) -> None:
        contact = request.headers.get("contact")
        self.answer(request, 200, now, Contact=f"{contact};expires={expires}")


def _state(client: OutboundClient) -> OutboundState:
    return client.state  # a call, so that mypy does not narrow the attribute between steps


def _setup(**register: Any) -> tuple[SipApplication, Registrar, OutboundClient]:
    sip = SipApplication(_NoCalls(), {"udp": ("198.51.100.1", 5060)})
    target = OutboundTarget.of(_peer(**register), "node1")
    assert target is not None
    client = OutboundClient(target, sip.layer, retry_min=5, retry_max=60)
    return sip, Registrar(sip), client


def test_challenge_answered_then_registered_and_refreshed_before_expiry() -> None:
    sip, registrar, client = _setup()
    client.start(1000.0)
    first = registrar.take()
    assert first.headers.get("expires") == "120"
    assert first.headers.get("contact") == "<sip:trunk1@198.51.100.1:5060>"
    assert first.uri == "sip:203.0.113.5:5070"
    assert first.headers.get("authorization") is None
    registrar.challenge(first, 1000.0)
    second = registrar.take()
    assert registrar.verify(second, 1000.0)
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    assert _state(client) is OutboundState.REGISTERING
    registrar.ok(second, 1000.0, 120)
    assert _state(client) is OutboundState.REGISTERED
    status = client.status(1000.0)
    assert (status.registered_for, status.next_action_in) == (120, refresh_delay(120)) == (120, 90)

    # Nothing is sent before the refresh time ...
    sip.layer.handle_timer(1089.9)
    assert sip.layer.drain() == []
    # ... then a refresh, with credentials already (the nonce's next nc), same Call-ID.
    sip.layer.handle_timer(1090.0)
    refresh = registrar.take()
    assert refresh.call_id == first.call_id and refresh.cseq.number == second.cseq.number + 1
    assert registrar.verify(refresh, 1090.0)
    assert "nc=00000002" in (refresh.headers.get("authorization") or "")
    registrar.ok(refresh, 1090.0, 120)
    assert client.status(1090.0).registered_for == 120


def test_granted_expires_is_what_the_registrar_says() -> None:
    _sip, registrar, client = _setup(expires=3600)
    client.start(1000.0)
    request = registrar.take()
    registrar.ok(request, 1000.0, 600)  # the registrar cut it to 600
    assert client.status(1000.0).registered_for == 600
    assert client.status(1000.0).next_action_in == 570  # 30 s before the end


def test_wrong_password_backs_off_doubling() -> None:
    sip, registrar, client = _setup(password="wrong")
    client.start(1000.0)
    now = 1000.0
    delays = []
    for _ in range(5):
        registrar.challenge(registrar.take(), now)
        answered = registrar.take()
        assert not registrar.verify(answered, now)
        registrar.challenge(answered, now)  # refused: challenged again, not stale
        assert _state(client) is OutboundState.FAILED
        delay = client.status(now).next_action_in
        assert delay is not None
        delays.append(delay)
        assert sip.layer.drain() == []  # no third attempt at once
        now += delay
        sip.layer.handle_timer(now)
    assert delays == [5, 10, 20, 40, 60]  # capped at retry_max
    assert client.failures == 5
    assert client.status(now).last_status == 401


def test_stale_challenge_is_answered_again() -> None:
    _sip, registrar, client = _setup()
    client.start(1000.0)
    registrar.challenge(registrar.take(), 1000.0)
    answered = registrar.take()
    registrar.challenge(answered, 1000.0, stale=True)
    again = registrar.take()
    assert registrar.verify(again, 1000.0)
    registrar.ok(again, 1000.0, 120)
    assert _state(client) is OutboundState.REGISTERED


def test_timeout_retries_later_and_success_resets_the_count() -> None:
    sip, registrar, client = _setup()
    client.start(1000.0)
    registrar.take()
    # UDP retransmissions (Timer E), then Timer F: no answer at all.
    now = 1000.0
    while client.state is not OutboundState.FAILED:
        now += 0.5
        sip.layer.handle_timer(now)
        sip.layer.drain()
    assert now == 1032.0  # 64 * T1
    assert client.status(now).last_status == 408
    assert client.status(now).next_action_in == 5
    sip.layer.handle_timer(now + 5)
    registrar.ok(registrar.take(), now + 5, 120)
    assert (_state(client), client.failures) == (OutboundState.REGISTERED, 0)


def test_interval_too_brief_asks_again_with_min_expires() -> None:
    _sip, registrar, client = _setup(expires=30)
    client.start(1000.0)
    registrar.answer(registrar.take(), 423, 1000.0, Min_Expires="300")
    again = registrar.take()
    assert again.headers.get("expires") == "300"
    registrar.ok(again, 1000.0, 300)
    assert _state(client) is OutboundState.REGISTERED


def test_retry_after_is_honoured() -> None:
    _sip, registrar, client = _setup()
    client.start(1000.0)
    registrar.answer(registrar.take(), 503, 1000.0, Retry_After="45")
    assert client.status(1000.0).next_action_in == 45


def test_stop_unregisters() -> None:
    sip, registrar, client = _setup()
    client.start(1000.0)
    registrar.challenge(registrar.take(), 1000.0)
    registrar.ok(registrar.take(), 1000.0, 120)
    client.stop(1010.0)
    bye = registrar.take()
    assert bye.headers.get("expires") == "0"
    assert registrar.verify(bye, 1010.0)
    assert _state(client) is OutboundState.UNREGISTERING
    registrar.answer(bye, 200, 1010.0)
    assert _state(client) is OutboundState.STOPPED
    sip.layer.handle_timer(5000.0)
    assert sip.layer.drain() == []  # no refresh after stop


def test_manager_follows_the_configuration() -> None:
    sip = SipApplication(_NoCalls(), {"udp": ("198.51.100.1", 5060)})
    manager = OutboundRegistrations(sip.layer)
    peer = _peer()
    manager.reconcile([peer], 1000.0)
    assert [s.peer for s in manager.statuses(1000.0)] == ["carrier"]
    assert len(sip.layer.drain()) == 1
    manager.reconcile([peer], 1000.0)  # unchanged: nothing restarted
    assert sip.layer.drain() == []
    manager.reconcile([_peer(expires=600)], 1000.0)  # changed: a new client
    assert len(sip.layer.drain()) == 1
    manager.reconcile([], 1000.0)
    assert manager.statuses(1000.0) == []
    status_text = repr(manager.statuses(1000.0))
    assert PASSWORD not in status_text


ACCOUNTS = (NodeAccount("node1", "trunk-n1", "pw-n1"), NodeAccount("node2", "trunk-n2", "pw-n2"))


def _per_node(default: bool = True, nodes: frozenset[str] = frozenset()) -> Peer:
    register = SupplierRegistration(
        username=USER if default else "",
        password=PASSWORD if default else "",
        registrar="203.0.113.5:5070",
        expires=120,
        nodes=ACCOUNTS,
    )
    return replace(_peer(nodes=nodes), register=register)


def test_each_node_registers_its_own_account_or_the_default_one() -> None:
    peer = _per_node(nodes=frozenset({"node1", "node2", "node3"}))
    targets = {node: OutboundTarget.of(peer, node) for node in ("node1", "node2", "node3")}
    assert {n: (t.username, t.password) if t else None for n, t in targets.items()} == {
        "node1": ("trunk-n1", "pw-n1"),
        "node2": ("trunk-n2", "pw-n2"),
        "node3": (USER, PASSWORD),  # no account of its own: the default one
    }
    assert OutboundTarget.of(peer, "node4") is None  # not attached: it never uses the peer
    only_own = _per_node(default=False)
    assert OutboundTarget.of(only_own, "node3") is None  # no account for it: no registration
    assert "pw-n1" not in repr(targets["node1"])


def test_a_node_registers_only_its_own_and_only_while_it_originates() -> None:
    sip = SipApplication(_NoCalls(), {"udp": ("198.51.100.2", 5060)})
    manager = OutboundRegistrations(sip.layer, node="node2")
    peer = _per_node(default=False)
    registrar = Registrar(sip)
    manager.reconcile([peer], 1000.0)
    first = registrar.take()
    assert (first.headers.get("from") or "").startswith("<sip:trunk-n2@203.0.113.5:5070>")
    assert first.headers.get("contact") == "<sip:trunk-n2@198.51.100.2:5060>"
    registrar.ok(first, 1000.0, 120)
    assert [s.state for s in manager.statuses(1000.0)] == ["registered"]
    # Another node holds the shared IP calls leave from: unregister, and stay so.
    manager.set_active(False, 1001.0)
    assert registrar.take().headers.get("expires") == "0"
    manager.reconcile([peer], 1002.0)
    assert manager.statuses(1002.0) == [] and sip.layer.drain() == []
    manager.set_active(True, 1003.0)
    assert registrar.take().headers.get("expires") == "120"
