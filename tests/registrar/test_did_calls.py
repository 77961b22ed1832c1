"""DID calls and subscribers calling out, through the B2BUA and the billing policy, as bytes.

Addresses: the switch 198.51.100.1; a DID provider 203.0.113.9 (deliver_dids, by ACL); a
termination carrier 203.0.113.20; the subscriber's phones behind NAT, registered from
192.0.2.10 and 192.0.2.11 while their Contacts name private addresses.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from b2bua.harness import Switch
from smartswitch.billing.accounting import Accounting
from smartswitch.model.cdr import CdrRecord
from smartswitch.model.config import (
    Account,
    AclEntry,
    ConfigSnapshot,
    Did,
    Peer,
    PeerRole,
    Rate,
    Route,
    RouteStrategy,
    RouteSupplier,
    Subscriber,
    Tariff,
)
from smartswitch.model.increment import Increment
from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.registrar.location import Binding, LocationService
from smartswitch.routing.policy import BillingPolicy
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.digest import DigestAuthenticator, build_authorization, compute_ha1
from smartswitch.sip.message import Request, Response, make_response
from smartswitch.sip.transaction import Address

REALM = "switch.example"
PROVIDER = Address("udp", "203.0.113.9", 5060)
CARRIER = Address("udp", "203.0.113.20", 5060)
PHONE_A = Address("udp", "192.0.2.10", 41000)
PHONE_B = Address("udp", "192.0.2.11", 42000)
STRANGER = Address("udp", "192.0.2.200", 5060)
WALL = 1_700_000_000.0  # wall clock = loop clock + WALL
DID = "15550001000"
_branches = itertools.count()


class Sink:
    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def append(self, record: CdrRecord, done: Callable[[], None] | None = None) -> None:
        self.records.append(record)
        if done is not None:
            done()


def _snapshot(*, subscriber_tariff: int | None = 2) -> ConfigSnapshot:
    rate = Rate(prefix="1", price_per_minute=Decimal("0.60"), increment=Increment(1, 1))
    return ConfigSnapshot(
        version=1,
        accounts={
            1: Account(1, "provider", "USD", Decimal(0), Decimal(0)),
            2: Account(2, "alice", "USD", Decimal("10"), Decimal(0)),
            3: Account(3, "carrier", "USD", Decimal(0), Decimal(0)),
        },
        tariffs={
            2: Tariff(2, "retail", "USD", (rate,)),
            3: Tariff(3, "buy", "USD", (Rate("1", Decimal("0.30")),)),
        },
        peers={
            1: Peer(
                1,
                "provider",
                PeerRole.SUPPLIER,
                1,
                None,
                acl=(AclEntry(ipaddress.ip_network("203.0.113.9/32")),),
                address="203.0.113.9:5060",
                deliver_dids=True,
            ),
            3: Peer(3, "carrier", PeerRole.SUPPLIER, 3, 3, address="203.0.113.20:5060"),
        },
        routes=(Route(1, "1", RouteStrategy.PRIORITY, (RouteSupplier(3),)),),
        subscribers={
            7: Subscriber(
                7,
                "alice",
                2,
                subscriber_tariff,
                REALM,
                compute_ha1("alice", REALM, "secret", "MD5"),
                compute_ha1("alice", REALM, "secret", "SHA-256"),
                caller_id="15550001000",
            )
        },
        dids={DID: Did(1, DID, subscriber_id=7)},
    )


class World:
    def __init__(self, **snapshot: Any) -> None:
        self.location = LocationService()
        self.sink = Sink()
        self.auth = DigestAuthenticator(REALM, b"did-call-tests-secret-0123456789")
        self.guard = SourceGuard(GuardSettings(fail_limit=2, rate=0))
        snap = _snapshot(**snapshot)
        accounting = Accounting()
        accounting.load(snap.accounts)
        self.policy = BillingPolicy(
            ConfigViews.build(snap),
            accounting,
            self.sink,
            self.auth,
            max_call_duration=3600,
            node_name="n1",
            wall_offset=lambda: WALL,
            location=self.location,
            guard=self.guard,
        )
        self.switch = Switch(self.policy)
        self.b2bua = self.switch.b2bua
        self.now = 10.0

    @property
    def now(self) -> float:
        return self.switch.now

    @now.setter
    def now(self, value: float) -> None:
        self.switch.now = value

    def bind(self, contact: str, source: Address, registered_at: float = 0.0) -> None:
        self.location.apply(
            Binding(
                aor="alice",
                contact=contact,
                expires_at=WALL + 3600,
                call_id="reg",
                cseq=1,
                source=source,
                registered_at=WALL + registered_at,
            )
        )

    def send(self, data: str | bytes, source: Address) -> None:
        self.switch.receive(data.encode() if isinstance(data, str) else data, source)

    def out(self) -> list[tuple[Request | Response, Address]]:
        return self.switch.take_all()

    def answer(self, request: Request, status: int, source: Address, tag: str) -> None:
        response = make_response(request, status, None, tag)
        response.headers.add("Contact", f"<sip:phone@10.0.0.{tag[-1]}:5060>")
        if status == 200:
            response.headers.add("Content-Type", "application/sdp")
            response.body = b"v=0\r\n"
        self.send(response.to_bytes(), source)


def invite(
    callee: str,
    source: Address,
    *,
    caller: str = "15559998888",
    auth: str | None = None,
    cseq: int = 1,
) -> str:
    lines = [
        f"INVITE sip:{callee}@198.51.100.1 SIP/2.0",
        f"Via: SIP/2.0/UDP {source.host}:{source.port};branch=z9hG4bK-{callee}-{cseq}-{next(_branches)}",
        f"From: <sip:{caller}@{source.host}>;tag=caller1",
        f"To: <sip:{callee}@198.51.100.1>",
        f"Call-ID: call-{callee}-{cseq}@{source.host}",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:{caller}@{source.host}:{source.port}>",
        "Max-Forwards: 70",
        "Content-Type: application/sdp",
    ]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    # A whole SDP: the B2BUA refuses a malformed one (488) before routing.
    body = f"v=0\r\no=- 1 1 IN IP4 {source.host}\r\ns=-\r\nc=IN IP4 {source.host}\r\nt=0 0\r\n"
    return "\r\n".join([*lines, f"Content-Length: {len(body)}", "", body])


def _final(messages: list[tuple[Request | Response, Address]]) -> Response:
    finals = [m for m, _ in messages if isinstance(m, Response) and m.status >= 200]
    assert len(finals) == 1, messages
    return finals[0]


# --- DID -> subscriber ------------------------------------------------------------------------


def test_did_call_forks_to_every_binding_first_answer_wins_nat_source_used() -> None:
    world = World()
    world.bind("sip:alice@10.0.0.5:5060;ob", PHONE_A)
    world.bind("sip:alice@10.0.0.6:5062", PHONE_B, registered_at=1)
    world.send(invite("+" + DID, PROVIDER), PROVIDER)
    out = world.out()
    invites = {dest: m for m, dest in out if isinstance(m, Request) and m.method == "INVITE"}
    # Both phones at once, each at the address its REGISTER came from, Request-URI = Contact.
    assert set(invites) == {PHONE_A, PHONE_B}
    assert invites[PHONE_A].uri == "sip:alice@10.0.0.5:5060;ob"
    assert invites[PHONE_B].uri == "sip:alice@10.0.0.6:5062"
    assert invites[PHONE_A].to.uri.startswith(f"sip:{DID}@")

    world.answer(invites[PHONE_A], 180, PHONE_A, "ta")
    world.answer(invites[PHONE_B], 180, PHONE_B, "tb")
    world.out()
    world.answer(invites[PHONE_B], 200, PHONE_B, "tb")
    out = world.out()
    cancels = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "CANCEL"]
    assert [d for _, d in cancels] == [PHONE_A]  # the loser is CANCELled
    assert _final(out).status == 200  # relayed to the provider

    # The provider hangs up: the BYE goes to the phone's NAT binding, not its private Contact.
    ok = _final(out)
    bye = "\r\n".join(
        [
            "BYE sip:x@198.51.100.1 SIP/2.0",
            "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-bye",
            "From: <sip:15559998888@203.0.113.9>;tag=caller1",
            f"To: {ok.headers.get('to')}",
            f"Call-ID: call-+{DID}-1@203.0.113.9",
            "CSeq: 2 BYE",
            "Content-Length: 0",
            "",
            "",
        ]
    )
    world.now = 70.0
    world.send(bye, PROVIDER)
    out = world.out()
    byes = [d for m, d in out if isinstance(m, Request) and m.method == "BYE"]
    assert byes == [PHONE_B]

    [record] = world.sink.records
    assert record.subscriber_id == 7
    assert (record.customer_peer_id, record.customer_account_id) == (0, 2)
    assert (record.supplier_peer_id, record.supplier_account_id) == (1, 1)
    assert (record.price, record.cost, record.billed_seconds) == (Decimal(0), Decimal(0), 0)
    assert record.callee == "+" + DID and record.callee_out == DID
    assert record.answer_time is not None and record.duration_ms == 60_000


def test_did_without_registration_gets_480_and_a_cdr() -> None:
    world = World()
    world.send(invite(DID, PROVIDER), PROVIDER)
    final = _final(world.out())
    assert (final.status, final.reason) == (480, "Temporarily Unavailable")
    # A refusal before any call exists writes no CDR (as for every rejected INVITE).
    assert world.sink.records == []


def test_expired_binding_is_not_called() -> None:
    world = World()
    world.location.apply(Binding("alice", "sip:alice@10.0.0.5", WALL + 5, "r", 1, PHONE_A, WALL))
    world.now = 10.0  # wall = WALL + 10: expired
    world.send(invite(DID, PROVIDER), PROVIDER)
    assert _final(world.out()).status == 480


def test_did_from_a_peer_that_does_not_deliver_dids_is_an_ordinary_call() -> None:
    world = World()
    world.bind("sip:alice@10.0.0.5", PHONE_A)
    world.send(invite(DID, STRANGER), STRANGER)
    final = _final(world.out())
    assert final.status == 407  # challenged like any unknown caller, not sent to alice


# --- subscribers calling out -----------------------------------------------------------------


def _authorised_invite(
    world: World, password: str = "secret", source: Address = PHONE_A
) -> list[tuple[Request | Response, Address]]:
    world.send(invite("15557776666", source, caller="alice"), source)
    challenge = _final(world.out())
    assert challenge.status == 407
    value = next(v for v in challenge.headers.get_lines("proxy-authenticate") if "MD5" in v)
    auth = build_authorization(
        value, "INVITE", "sip:15557776666@198.51.100.1", "alice", password, 1
    )
    world.send(invite("15557776666", source, caller="alice", auth=auth, cseq=2), source)
    return world.out()


def test_subscriber_calls_out_billed_like_a_customer() -> None:
    world = World()
    out = _authorised_invite(world)
    invites = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert [d for _, d in invites] == [CARRIER]
    b_invite = invites[0][0]
    assert b_invite.from_.uri.startswith("sip:15550001000@")  # its caller_id, not "alice"
    world.answer(b_invite, 200, CARRIER, "tc")
    world.out()
    world.now = 40.0
    assert world.b2bua.hangup(next(iter(world.b2bua.calls)), world.now)
    [record] = world.sink.records
    assert (record.customer_peer_id, record.subscriber_id, record.customer_account_id) == (0, 7, 2)
    assert record.price == Decimal("0.3000")  # 30 s at 0.60 per minute, 1/1
    assert record.supplier_peer_id == 3


def test_subscriber_without_tariff_cannot_call_out() -> None:
    world = World(subscriber_tariff=None)
    final = _final(_authorised_invite(world))
    assert final.status == 403


def test_wrong_subscriber_password_on_invite_counts_towards_a_ban() -> None:
    world = World()
    assert _final(_authorised_invite(world, "guess")).status == 403
    assert _final(_authorised_invite(world, "guess")).status == 403
    # fail_limit 2: banned now, the right password included, without a challenge.
    world.send(invite("15557776666", PHONE_A, caller="alice", cseq=9), PHONE_A)
    final = _final(world.out())
    assert (final.status, final.headers.get("proxy-authenticate")) == (403, None)
    # The DID provider, known by its ACL, is never subject to the guard.
    world.bind("sip:alice@10.0.0.9", PHONE_B)
    world.send(invite(DID, PROVIDER), PROVIDER)
    assert any(m.method == "INVITE" for m, _ in world.out() if isinstance(m, Request))
