"""BillingPolicy driven by hand: a hand-made configuration, INVITEs parsed from bytes, and its
sessions told what the B2BUA would tell them (the attempts, the answer, the call's summary).
No sockets, no database, no clock but ours."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from b2bua.harness import Switch
from smartswitch.b2bua.ports import CallAttempt, CallSummary, Rejection
from smartswitch.billing.accounting import Accounting
from smartswitch.model.cdr import CdrAttempt, CdrRecord, HangupSide
from smartswitch.model.cdr import HangupSide as CallHangup
from smartswitch.model.config import (
    Account,
    AclEntry,
    ConfigSnapshot,
    Peer,
    PeerRole,
    ProfitControl,
    Rate,
    RewriteRule,
    Route,
    RouteStrategy,
    RouteSupplier,
    Tariff,
)
from smartswitch.model.increment import Increment
from smartswitch.model.media import MediaMode, MediaSettings
from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.routing.policy import BillingCall, BillingPolicy
from smartswitch.routing.views import ConfigViews
from smartswitch.sip.digest import DigestAuthenticator, build_authorization
from smartswitch.sip.message import Request, Response, make_response, parse_message
from smartswitch.sip.transaction import Address

ACME, CARRIER_A, CARRIER_B, DIALUP = 1, 2, 3, 4  # account ids; peers use the same ids
RETAIL, BUY_A, BUY_B = 1, 2, 3
CALLER = Address("udp", "127.0.0.2", 5061)
STRANGER = Address("udp", "127.0.0.9", 5061)
CARRIER_B_ADDRESS = Address("udp", "127.0.0.4", 5070)
WALL_OFFSET = 1_780_000_000.0  # the loop clock starts near 0; wall time = now + offset
NOW = 1000.0
REALM = "smartswitch"


def _rate(prefix: str, price: str, increment: str = "60/60", fee: str = "0") -> Rate:
    return Rate(prefix, Decimal(price), Decimal(fee), Increment.parse(increment))


def snapshot(
    *,
    balance: str = "100",
    credit: str = "0",
    retail: tuple[Rate, ...] | None = None,
    customer: dict[str, object] | None = None,
    suppliers: dict[int, dict[str, object]] | None = None,
    strategy: RouteStrategy = RouteStrategy.LEAST_COST,
    version: int = 1,
) -> ConfigSnapshot:
    """The issue's example, with changes."""
    accounts = {
        ACME: Account(ACME, "acme", "USD", Decimal(balance), Decimal(credit)),
        CARRIER_A: Account(CARRIER_A, "carrier-a", "USD", Decimal(0), Decimal(0)),
        CARRIER_B: Account(CARRIER_B, "carrier-b", "USD", Decimal(0), Decimal(0)),
        DIALUP: Account(DIALUP, "dialup", "USD", Decimal(5), Decimal(0)),
    }
    if retail is None:
        retail = (_rate("1", "0.0100"), _rate("44", "0.0200", "1/1", "0.0050"))
    tariffs = {
        RETAIL: Tariff(RETAIL, "retail", "USD", retail),
        BUY_A: Tariff(BUY_A, "buy-a", "USD", (_rate("1", "0.0060"),)),
        BUY_B: Tariff(BUY_B, "buy-b", "USD", (_rate("1", "0.0040"), _rate("44", "0.0100"))),
    }
    acme = Peer(
        ACME,
        "acme-trunk",
        PeerRole.CUSTOMER,
        ACME,
        RETAIL,
        acl=(AclEntry(ipaddress.ip_network("127.0.0.2/32")),),
        max_calls=500,
    )
    if customer:
        acme = replace(acme, **customer)  # type: ignore[arg-type]
    a = Peer(CARRIER_A, "carrier-a", PeerRole.SUPPLIER, CARRIER_A, BUY_A, address="127.0.0.3:5070")
    b = Peer(CARRIER_B, "carrier-b", PeerRole.SUPPLIER, CARRIER_B, BUY_B, address="127.0.0.4:5070")
    for peer_id, changes in (suppliers or {}).items():
        if peer_id == CARRIER_A:
            a = replace(a, **changes)  # type: ignore[arg-type]
        else:
            b = replace(b, **changes)  # type: ignore[arg-type]
    dialup = Peer(
        DIALUP, "dialup-phone", PeerRole.CUSTOMER, DIALUP, RETAIL, username="alice", password="pw"
    )
    route = Route(1, "", strategy, (RouteSupplier(CARRIER_A, 0), RouteSupplier(CARRIER_B, 1)))
    return ConfigSnapshot(
        version=version,
        accounts=accounts,
        peers={p.id: p for p in (acme, a, b, dialup)},
        tariffs=tariffs,
        routes=(route,),
    )


class Sink:
    """The outbox as the policy sees it: records kept, ``done`` called at once."""

    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def append(self, record: CdrRecord, done: Callable[[], None] | None = None) -> None:
        self.records.append(record)
        if done is not None:
            done()


def make_policy(
    snap: ConfigSnapshot | None = None,
    *,
    reserve_seconds: int = 300,
    max_call_duration: float = 3 * 3600.0,
) -> tuple[BillingPolicy, Accounting, Sink]:
    snap = snap or snapshot()
    accounting = Accounting()
    accounting.load(snap.accounts)
    sink = Sink()
    policy = BillingPolicy(
        ConfigViews.build(snap),
        accounting,
        sink,
        DigestAuthenticator(REALM, b"k" * 32, algorithms=("MD5",)),
        max_call_duration=max_call_duration,
        node_name="node1",
        wall_offset=lambda: WALL_OFFSET,
        reserve_seconds=reserve_seconds,
    )
    return policy, accounting, sink


_SEQ = iter(range(1, 10**9))


def invite(
    number: str = "15551234567",
    *,
    caller: str = "5550001",
    proxy_authorization: str | None = None,
    uri: str | None = None,
    call_id: str | None = None,
) -> Request:
    n = next(_SEQ)
    uri = uri or f"sip:{number}@127.0.0.1:5060"
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-{n}",
        f"From: <sip:{caller}@127.0.0.2:5061>;tag=f{n}",
        f"To: <sip:{number}@127.0.0.1:5060>",
        f"Call-ID: {call_id or f'call-{n}'}",
        "CSeq: 1 INVITE",
        "Contact: <sip:caller@127.0.0.2:5061>",
        "Max-Forwards: 70",
    ]
    if proxy_authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy_authorization}")
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def routed(
    policy: BillingPolicy,
    request: Request | None = None,
    source: Address = CALLER,
    now: float = NOW,
) -> BillingCall:
    session = policy.route(request or invite(), source, now)
    assert isinstance(session, BillingCall), session
    return session


def refused(
    policy: BillingPolicy,
    request: Request | None = None,
    source: Address = CALLER,
    now: float = NOW,
) -> Rejection:
    rejection = policy.route(request or invite(), source, now)
    assert isinstance(rejection, Rejection), rejection
    return rejection


@dataclass
class Call:
    """What the B2BUA would tell a session of its call, told by hand: attempts, an answer,
    then the call's summary."""

    session: BillingCall
    call_id: str
    setup_time: float = NOW
    attempts: list[CallAttempt] = field(default_factory=list)
    answered: CallAttempt | None = None


def new_call(request: Request, session: BillingCall, now: float = NOW) -> Call:
    return Call(session, request.call_id, now)


def answer(call: Call, index: int = 0, at: float = NOW + 0.5) -> None:
    """Failed attempts for every destination before ``index`` (503), then ``index`` answers."""
    started = call.setup_time
    for n, destination in enumerate(call.session.destinations[: index + 1]):
        if n < index:
            failed = CallAttempt(n, destination, started, started + 0.1, 503, "Service Unavailable")
            call.attempts.append(failed)
            started += 0.1
        else:
            call.answered = CallAttempt(n, destination, started, at, 200, "OK")
            call.attempts.append(call.answered)
    assert call.answered is not None
    call.session.answered(call.answered)


def end(
    call: Call,
    at: float,
    side: CallHangup = CallHangup.CALLER,
    why: str = "bye",
    status: int = 200,
    reason: str = "OK",
) -> list[str]:
    """End the call; returns what happened to ``done`` (["done"] once it was called)."""
    summary = CallSummary(
        call_id=call.call_id,
        setup_time=call.setup_time,
        ringing_time=None,
        answer_time=call.answered.ended if call.answered is not None else None,
        end_time=at,
        status=status,
        reason=reason,
        hangup_side=side,
        hangup_reason=why,
        attempts=tuple(call.attempts),
        answered=call.answered,
    )
    called: list[str] = []
    call.session.ended(summary, lambda: called.append("done"))
    return called


def wall(now: float) -> datetime:
    return datetime.fromtimestamp(now + WALL_OFFSET, UTC)


# --------------------------------------------------------------------------- identification


def test_a_source_in_the_acl_is_the_customer() -> None:
    policy, _, _ = make_policy()
    session = routed(policy)
    assert session.customer.name == "acme-trunk"
    assert session.account_id == ACME


def test_an_unknown_source_gets_403_without_a_challenge_when_nobody_uses_passwords() -> None:
    snap = snapshot()
    peers = {k: v for k, v in snap.peers.items() if k != DIALUP}
    policy, accounting, _ = make_policy(replace(snap, peers=peers))
    rejection = refused(policy, source=STRANGER)
    assert (rejection.status, rejection.headers) == (403, ())
    assert accounting.reserved == {}


def test_an_unknown_source_is_challenged_when_customers_use_passwords() -> None:
    policy, _, _ = make_policy()
    rejection = refused(policy, source=STRANGER)
    assert rejection.status == 407
    names = {name for name, _ in rejection.headers}
    assert names == {"Proxy-Authenticate"}
    assert f'realm="{REALM}"' in rejection.headers[0][1]


def _authorized(
    policy: BillingPolicy,
    username: str = "alice",
    password: str = "pw",
    uri: str = "sip:15551234567@127.0.0.1:5060",
    nc: int = 1,
) -> str:
    challenge = refused(policy, source=STRANGER).headers[0][1]
    return build_authorization(challenge, "INVITE", uri, username, password, nc)


FINGERPRINT = ":".join(["AB"] * 32)
OTHER_FINGERPRINT = ":".join(["CD"] * 32)


def _over_tls(policy: BillingPolicy, certificates: dict[Address, str]) -> None:
    policy.certificate_of = certificates.get


def test_a_client_certificate_identifies_its_peer_from_any_address() -> None:
    policy, _, _ = make_policy(snapshot(customer={"acl": (), "tls_fingerprint": FINGERPRINT}))
    elsewhere = Address("tls", "127.0.0.9", 40000)
    _over_tls(policy, {elsewhere: FINGERPRINT})
    assert routed(policy, source=elsewhere).customer.name == "acme-trunk"
    # The same address over UDP, or over TLS without the certificate: a stranger.
    assert refused(policy, source=Address("udp", "127.0.0.9", 40000)).status == 407
    _over_tls(policy, {elsewhere: OTHER_FINGERPRINT})
    assert refused(policy, source=elsewhere).status == 407


def test_a_peer_known_by_its_certificate_is_refused_by_its_acl_alone() -> None:
    policy, _, _ = make_policy(snapshot(customer={"tls_fingerprint": FINGERPRINT}))
    tls_caller = Address("tls", CALLER.host, 40001)
    _over_tls(policy, {tls_caller: OTHER_FINGERPRINT})
    for source in (CALLER, tls_caller):
        rejection = refused(policy, source=source)
        assert (rejection.status, rejection.reason) == (403, "Forbidden (certificate required)")
    _over_tls(policy, {tls_caller: FINGERPRINT})
    assert routed(policy, source=tls_caller).customer.name == "acme-trunk"


def test_digest_credentials_identify_the_customer() -> None:
    policy, _, _ = make_policy()
    request = invite(proxy_authorization=_authorized(policy))
    session = routed(policy, request, source=STRANGER)
    assert session.customer.name == "dialup-phone"
    assert session.account_id == DIALUP


@pytest.mark.parametrize(
    ("username", "password", "uri"),
    [
        ("alice", "wrong", "sip:15551234567@127.0.0.1:5060"),
        ("mallory", "pw", "sip:15551234567@127.0.0.1:5060"),
        # made for another Request-URI: a replayed INVITE to a dearer destination
        ("alice", "pw", "sip:4420000000@127.0.0.1:5060"),
    ],
)
def test_bad_digest_credentials_get_403(username: str, password: str, uri: str) -> None:
    policy, accounting, _ = make_policy()
    request = invite(proxy_authorization=_authorized(policy, username, password, uri))
    assert refused(policy, request, source=STRANGER).status == 403
    assert accounting.reserved == {}


def test_replayed_digest_credentials_are_challenged_again_as_stale() -> None:
    policy, _, _ = make_policy()
    credentials = _authorized(policy)
    routed(policy, invite(proxy_authorization=credentials), source=STRANGER)
    again = refused(policy, invite(proxy_authorization=credentials), source=STRANGER)
    assert again.status == 407
    assert "stale=true" in again.headers[0][1]


def test_a_spread_attack_on_a_digest_customer_does_not_stop_its_own_calls() -> None:
    """INVITE digest answers count per account as REGISTERs do (one guard): guesses from many
    addresses back the account off; the customer's own address keeps calling."""
    policy, _, _ = make_policy()
    policy.guard = SourceGuard(GuardSettings(rate=0, account_fail_limit=5))
    routed(policy, invite(proxy_authorization=_authorized(policy)), source=STRANGER)
    for n in range(10):
        attacker = Address("udp", f"198.51.100.{n}", 5060)
        guess = invite(proxy_authorization=_authorized(policy, password=f"guess{n}"))
        assert refused(policy, guess, source=attacker).status == 403
    assert policy.guard.stats["backoffs"] == 1
    assert policy.guard.stats["backoff_refused"] == 5
    # The right password from a new address: refused unchecked; from the customer's: routed.
    newcomer = Address("udp", "203.0.113.9", 5060)
    right = invite(proxy_authorization=_authorized(policy, nc=1))
    assert refused(policy, right, source=newcomer).status == 403
    routed(policy, invite(proxy_authorization=_authorized(policy)), source=STRANGER)


def test_a_disabled_customer_is_refused() -> None:
    # By address: a disabled customer's ACL no longer matches, it is a stranger.
    policy, _, _ = make_policy(snapshot(customer={"enabled": False}))
    assert refused(policy).status == 407  # others use passwords: it may try one
    # By password: authenticated, then refused.
    snap = snapshot()
    peers = dict(snap.peers)
    peers[DIALUP] = replace(peers[DIALUP], enabled=False)
    policy, accounting, _ = make_policy(replace(snap, peers=peers))
    request = invite(proxy_authorization=_authorized(policy))
    rejection = refused(policy, request, source=STRANGER)
    assert (rejection.status, rejection.reason) == (403, "Forbidden (peer disabled)")
    assert accounting.reserved == {}


def test_a_customer_calling_a_node_it_is_not_attached_to_gets_403_saying_so() -> None:
    # Attached to node2 only; this policy is node1's. By address and by password alike.
    snap = snapshot(customer={"nodes": frozenset({"node2"})})
    peers = dict(snap.peers)
    peers[DIALUP] = replace(peers[DIALUP], nodes=frozenset({"node2", "node3"}))
    policy, accounting, _ = make_policy(replace(snap, peers=peers))
    for rejection in (
        refused(policy),
        refused(policy, invite(proxy_authorization=_authorized(policy)), source=STRANGER),
    ):
        assert (rejection.status, rejection.reason) == (403, "Forbidden")
        assert rejection.headers == (
            ("Reason", 'SIP;cause=403;text="customer not served on this node"'),
        )
    assert accounting.reserved == {} and policy.customer_calls.get(ACME) == 0
    # Attached to node1 among others, or to every node (no set): served.
    policy, _, _ = make_policy(snapshot(customer={"nodes": frozenset({"node2", "node1"})}))
    assert routed(policy).destinations
    policy, _, _ = make_policy(snapshot(customer={"nodes": frozenset()}))
    assert routed(policy).destinations


# --------------------------------------------------------------------------- authorisation


def test_no_rate_is_404_and_no_route_is_404() -> None:
    policy, _, _ = make_policy()
    assert refused(policy, invite("9995551234")).status == 404
    assert "rate" in refused(policy, invite("9995551234")).reason

    snap = snapshot()
    no_route = replace(snap, routes=(replace(snap.routes[0], prefix="7"),))
    policy, accounting, _ = make_policy(no_route)
    rejection = refused(policy)
    assert (rejection.status, "route" in rejection.reason) == (404, True)
    assert accounting.reserved == {}


@pytest.mark.parametrize("balance", ["0", "0.0099", "-5"])
def test_a_balance_that_does_not_pay_the_first_increment_is_402(balance: str) -> None:
    policy, accounting, _ = make_policy(snapshot(balance=balance))
    rejection = refused(policy)
    assert rejection.status == 402
    assert accounting.reserved == {}


def test_the_credit_limit_counts_as_money() -> None:
    policy, _, _ = make_policy(snapshot(balance="0", credit="0.0200"))
    session = routed(policy)
    # 0.0200 at 0.0100/min, 60/60: two whole minutes
    assert session.max_duration == 120


def test_the_maximum_duration_is_what_the_balance_buys() -> None:
    policy, accounting, _ = make_policy(
        snapshot(balance="0.0500", retail=(_rate("1", "0.6000", "1/1"),))
    )
    session = routed(policy)
    assert session.max_duration == 5
    assert accounting.reserved[ACME] == Decimal("0.0500")
    assert accounting.available(ACME) == 0
    # the whole balance is held by the call in progress: a second call cannot start
    assert refused(policy).status == 402


def test_the_first_grant_is_one_slice_and_never_past_the_node_maximum() -> None:
    policy, accounting, _ = make_policy(reserve_seconds=300)
    assert routed(policy).max_duration == 300
    assert accounting.reserved[ACME] == Decimal("0.0500")  # 5 min at 0.0100/min
    policy, _, _ = make_policy(reserve_seconds=300, max_call_duration=90)
    assert routed(policy).max_duration == 90


def test_reservations_of_calls_in_progress_limit_new_calls() -> None:
    # 0.0300 pays three 1-minute reservations at most (slices of 60 s)
    policy, accounting, _ = make_policy(snapshot(balance="0.0300"), reserve_seconds=60)
    for _ in range(3):
        routed(policy)
    assert accounting.available(ACME) == 0
    assert refused(policy).status == 402


# --------------------------------------------------------------------------- limits


def test_concurrent_call_limit_answers_503_with_reason_until_a_call_ends() -> None:
    policy, _, _ = make_policy(snapshot(customer={"max_calls": 2}))
    first = invite()
    session = routed(policy, first)
    routed(policy)
    rejection = refused(policy)
    assert rejection.status == 503
    assert rejection.headers == (("Reason", 'SIP;cause=503;text="concurrent call limit reached"'),)
    end(new_call(first, session), NOW + 1, status=487, reason="Request Terminated")
    routed(policy)


def test_calls_per_second_limit_answers_503_with_reason() -> None:
    policy, _, _ = make_policy(snapshot(customer={"max_cps": 2}))
    routed(policy, now=NOW)
    routed(policy, now=NOW)
    rejection = refused(policy, now=NOW + 0.1)
    assert rejection.status == 503
    assert "call rate limit" in dict(rejection.headers)["Reason"]
    routed(policy, now=NOW + 1.0)


def test_a_supplier_over_its_call_rate_is_skipped_until_its_bucket_refills() -> None:
    policy, _, _ = make_policy(snapshot(suppliers={CARRIER_B: {"max_cps": 2}}))
    labels = [[d.label for d in routed(policy, now=NOW).destinations] for _ in range(3)]
    # The cheapest supplier takes two calls in this second; the third goes to the next one.
    assert labels == [["carrier-b", "carrier-a"], ["carrier-b", "carrier-a"], ["carrier-a"]]
    assert routed(policy, now=NOW + 1.0).destinations[0].label == "carrier-b"


def test_a_supplier_at_its_concurrent_call_limit_is_skipped() -> None:
    policy, _, _ = make_policy(snapshot(suppliers={CARRIER_B: {"max_calls": 1}}))
    request = invite()
    session = routed(policy, request)
    assert [d.label for d in session.destinations] == ["carrier-b", "carrier-a"]
    call = new_call(request, session)
    answer(call)
    assert [d.label for d in routed(policy).destinations] == ["carrier-a"]
    end(call, NOW + 2)
    assert [d.label for d in routed(policy).destinations] == ["carrier-b", "carrier-a"]


def test_suppliers_without_an_address_or_disabled_are_skipped_and_none_left_is_503() -> None:
    policy, _, _ = make_policy(
        snapshot(suppliers={CARRIER_A: {"address": None}, CARRIER_B: {"enabled": False}})
    )
    rejection = refused(policy)
    assert rejection.status == 503
    assert "no supplier" in dict(rejection.headers)["Reason"]


def test_a_supplier_is_used_only_from_the_nodes_it_is_attached_to() -> None:
    # The cheaper carrier-b is attached to node2 and node3 only: node1 skips it, as it skips
    # a supplier over its limits, and the route's next supplier takes the call.
    policy, _, _ = make_policy(snapshot(suppliers={CARRIER_B: {"nodes": frozenset({"n2", "n3"})}}))
    assert [d.label for d in routed(policy).destinations] == ["carrier-a"]
    both: dict[str, object] = {"nodes": frozenset({"n2"})}
    policy, _, _ = make_policy(snapshot(suppliers={CARRIER_A: both, CARRIER_B: both}))
    rejection = refused(policy)
    assert rejection.status == 503
    assert "no supplier" in dict(rejection.headers)["Reason"]
    attached: dict[str, object] = {"nodes": frozenset({"node1"})}
    policy, _, _ = make_policy(snapshot(suppliers={CARRIER_B: attached}))
    assert [d.label for d in routed(policy).destinations] == ["carrier-b", "carrier-a"]


# --------------------------------------------------------------------------- routing


def test_least_cost_orders_by_buying_rate_and_destinations_carry_the_supplier() -> None:
    policy, _, _ = make_policy()
    session = routed(policy)
    assert [d.label for d in session.destinations] == ["carrier-b", "carrier-a"]
    first = session.destinations[0]
    assert first.uri == "sip:15551234567@127.0.0.4:5070"
    assert first.address == Address("udp", "127.0.0.4", 5070)
    assert session.suppliers[0].peer.name == "carrier-b"
    assert session.suppliers[0].rate.price_per_minute == Decimal("0.0040")


def test_priority_keeps_the_route_order() -> None:
    policy, _, _ = make_policy(snapshot(strategy=RouteStrategy.PRIORITY))
    assert [d.label for d in routed(policy).destinations] == ["carrier-a", "carrier-b"]


@pytest.mark.parametrize(
    ("control", "price", "expected"),
    [
        (ProfitControl.ALLOW_LOSS, "0.0050", ["carrier-b", "carrier-a"]),
        (ProfitControl.NO_LOSS, "0.0050", ["carrier-b"]),
        (ProfitControl.PROFIT_ONLY, "0.0050", ["carrier-b"]),
        (ProfitControl.NO_LOSS, "0.0040", ["carrier-b"]),
        (ProfitControl.PROFIT_ONLY, "0.0040", []),
        (ProfitControl.NO_LOSS, "0.0030", []),
    ],
)
def test_profit_control(control: ProfitControl, price: str, expected: list[str]) -> None:
    policy, accounting, _ = make_policy(
        snapshot(retail=(_rate("1", price),), customer={"profit_control": control})
    )
    session = policy.route(invite(), CALLER, NOW)
    if expected:
        assert isinstance(session, BillingCall)
        assert [d.label for d in session.destinations] == expected
    else:
        assert isinstance(session, Rejection)
        assert session.status == 503
        assert "no supplier" in dict(session.headers)["Reason"]
        assert accounting.reserved == {}


def test_numbers_are_rewritten_for_the_customer_then_for_the_supplier() -> None:
    policy, _, _ = make_policy(
        snapshot(
            customer={
                "callee_rewrite": (RewriteRule("^00", ""),),
                "caller_rewrite": (RewriteRule("^", "+"),),
            },
            suppliers={CARRIER_B: {"callee_rewrite": (RewriteRule("^", "777#"),)}},
        )
    )
    request = invite("0015551234567", caller="5550001")
    session = routed(policy, request)
    first = session.destinations[0]
    assert first.label == "carrier-b"
    assert (first.callee, first.caller) == ("777#15551234567", "+5550001")
    assert first.uri == "sip:777#15551234567@127.0.0.4:5070"
    assert (session.caller, session.callee) == ("5550001", "0015551234567")  # as received


def test_a_plus_before_the_number_is_not_part_of_the_prefix() -> None:
    policy, _, _ = make_policy()
    assert routed(policy, invite("+15551234567")).rate.prefix == "1"


def test_a_new_configuration_applies_to_new_calls_only() -> None:
    policy, accounting, sink = make_policy()
    request = invite()
    session = routed(policy, request)
    call = new_call(request, session)
    answer(call)
    dearer = snapshot(retail=(_rate("1", "0.0500"),), version=2, credit="10")
    policy.update(ConfigViews.build(dearer))
    assert accounting.credit[ACME] == Decimal(10)
    assert accounting.stored[ACME] == Decimal(100), "balances do not come from the config"
    end(call, NOW + 10)
    assert sink.records[-1].price == Decimal("0.0100")  # the price it started with
    assert routed(policy).rate.price_per_minute == Decimal("0.0500")


# --------------------------------------------------------------------------- extension


def test_time_is_granted_in_slices_up_to_the_balance() -> None:
    """0.0500 at 0.6000/min 1/1 with 2 s slices: 2 s, then +2, then +1, then nothing."""
    policy, accounting, _ = make_policy(
        snapshot(balance="0.0500", retail=(_rate("1", "0.6000", "1/1"),)), reserve_seconds=2
    )
    request = invite()
    session = routed(policy, request)
    assert session.max_duration == 2
    assert accounting.reserved[ACME] == Decimal("0.0200")
    call = new_call(request, session)
    answer(call)
    assert call.session.extend(NOW) == 2
    assert accounting.reserved[ACME] == Decimal("0.0400")
    assert call.session.extend(NOW) == 1
    assert accounting.reserved[ACME] == Decimal("0.0500")
    assert accounting.available(ACME) == 0
    assert call.session.extend(NOW) == 0
    assert accounting.reserved[ACME] == Decimal("0.0500")
    # cut at 5 s by the switch, its timer 40 ms late: 5 s billed, not 6
    end(call, NOW + 0.5 + 5.04, side=CallHangup.SWITCH, why="max duration")
    assert accounting.reserved[ACME] == 0
    assert accounting.balance(ACME) == 0
    assert accounting.available(ACME) == 0


def test_a_slice_is_not_extended_past_the_node_maximum() -> None:
    policy, _, _ = make_policy(reserve_seconds=60, max_call_duration=100)
    request = invite()
    session = routed(policy, request)
    assert session.max_duration == 60
    call = new_call(request, session)
    answer(call)
    assert call.session.extend(NOW) == 40
    assert call.session.extend(NOW) == 0


def test_an_extension_sees_what_other_calls_spent_meanwhile() -> None:
    policy, accounting, _ = make_policy(
        snapshot(balance="0.0500", retail=(_rate("1", "0.6000", "1/1"),)), reserve_seconds=2
    )
    first_request = invite()
    first = new_call(first_request, routed(policy, first_request))
    answer(first)
    second_request = invite()
    second = new_call(second_request, routed(policy, second_request))
    answer(second)
    # 0.0100 left unreserved: the first call gets 1 s more, the second nothing
    assert first.session.extend(NOW) == 1
    assert second.session.extend(NOW) == 0
    assert accounting.available(ACME) == 0


# --------------------------------------------------------------------------- rating


def test_an_answered_call_is_rated_into_one_cdr() -> None:
    policy, accounting, sink = make_policy()
    request = invite(call_id="the-call")
    session = routed(policy, request)
    call = new_call(request, session)
    answer(call, index=1, at=NOW + 0.7)  # carrier-b 503, carrier-a answers
    done = end(call, NOW + 0.7 + 61.2, side=CallHangup.CALLEE)
    assert done == ["done"]
    [cdr] = sink.records
    # Every field, so that a change in how the record is built cannot drop or alter one.
    assert cdr == CdrRecord(
        id=cdr.id,
        call_id="the-call",
        node="node1",
        customer_peer_id=ACME,
        customer_account_id=ACME,
        caller="5550001",
        callee="15551234567",
        caller_out="5550001",
        callee_out="15551234567",
        setup_time=wall(NOW),
        answer_time=wall(NOW + 0.7),
        end_time=wall(NOW + 0.7 + 61.2),
        duration_ms=61200,
        billed_seconds=120,  # 60/60: 61.2 s -> two minutes
        price=Decimal("0.0200"),
        cost=Decimal("0.0120"),
        currency="USD",
        sip_code=200,
        sip_reason="OK",
        hangup_side=HangupSide.CALLEE,
        hangup_reason="bye",
        supplier_peer_id=CARRIER_A,
        supplier_account_id=CARRIER_A,
        attempts=(
            CdrAttempt(1, CARRIER_B, 503, "Service Unavailable", wall(NOW), wall(NOW + 0.1)),
            CdrAttempt(2, CARRIER_A, 200, "OK", wall(NOW + 0.1), wall(NOW + 0.7)),
        ),
        subscriber_id=None,
    )
    # Equal Decimals can differ in their places, which the outbox's JSON keeps.
    assert (str(cdr.price), str(cdr.cost), str(cdr.profit)) == ("0.0200", "0.0120", "0.0080")
    assert cdr.setup_time == wall(NOW).replace(microsecond=wall(NOW).microsecond // 1000 * 1000)
    assert accounting.reserved[ACME] == 0
    assert accounting.balance(ACME) == Decimal("99.9800")
    assert accounting.balance(CARRIER_A) == Decimal("-0.0120")
    assert accounting.pending == {
        cdr.id: ((ACME, Decimal("0.0200")), (CARRIER_A, Decimal("0.0120")))
    }
    assert policy.customer_calls.get(ACME) == 0
    assert policy.supplier_calls.get(CARRIER_A) == 0


def test_an_unanswered_call_costs_nothing_and_keeps_its_attempts() -> None:
    policy, accounting, sink = make_policy()
    request = invite()
    session = routed(policy, request)
    call = new_call(request, session)
    for n, destination in enumerate(session.destinations):
        call.attempts.append(
            CallAttempt(n, destination, NOW, NOW + 0.1, 503, "Service Unavailable")
        )
    end(
        call,
        NOW + 0.3,
        side=CallHangup.SWITCH,
        why="no route left",
        status=503,
        reason="Service Unavailable",
    )
    [cdr] = sink.records
    assert cdr == CdrRecord(
        id=cdr.id,
        call_id=request.call_id,
        node="node1",
        customer_peer_id=ACME,
        customer_account_id=ACME,
        caller="5550001",
        callee="15551234567",
        caller_out="5550001",  # as sent by the last attempt
        callee_out="15551234567",
        setup_time=wall(NOW),
        answer_time=None,
        end_time=wall(NOW + 0.3),
        duration_ms=0,
        billed_seconds=0,
        price=Decimal("0.0000"),
        cost=Decimal("0.0000"),
        currency="USD",
        sip_code=503,
        sip_reason="Service Unavailable",
        hangup_side=HangupSide.SWITCH,
        hangup_reason="no route left",
        supplier_peer_id=None,
        supplier_account_id=None,
        attempts=(
            CdrAttempt(1, CARRIER_B, 503, "Service Unavailable", wall(NOW), wall(NOW + 0.1)),
            CdrAttempt(2, CARRIER_A, 503, "Service Unavailable", wall(NOW), wall(NOW + 0.1)),
        ),
        subscriber_id=None,
    )
    assert (str(cdr.price), str(cdr.cost)) == ("0.0000", "0.0000")
    assert accounting.pending == {}
    assert accounting.available(ACME) == Decimal(100)


def test_connect_fee_and_per_second_billing() -> None:
    policy, _, sink = make_policy()
    request = invite("447700900123")
    call = new_call(request, routed(policy, request))
    answer(call)
    end(call, NOW + 0.5 + 7.2)
    # 44: 0.0200/min 1/1 + 0.0050 connect fee; 7.2 s -> 8 s -> 0.0050 + 0.0200*8/60
    assert sink.records[0].billed_seconds == 8
    assert sink.records[0].price == Decimal("0.0077")


def test_ending_releases_exactly_what_the_call_reserved() -> None:
    policy, accounting, _ = make_policy(reserve_seconds=2)
    calls = []
    for _ in range(5):
        request = invite()
        call = new_call(request, routed(policy, request))
        answer(call)
        call.session.extend(NOW)
        calls.append(call)
    for n, call in enumerate(calls):
        end(call, NOW + 1 + n)
    assert accounting.reserved[ACME] == 0
    assert accounting.available(ACME) == Decimal(100) - Decimal("0.0500")  # 5 x 1 minute


# --------------------------------------------------------------------------- with the B2BUA


def _drive_a_call_through_the_b2bua(
    policy: BillingPolicy, late: float
) -> tuple[Switch, list[tuple[Request | Response, Address]]]:
    """INVITE from the customer, 200 from carrier-b; then every timer fires ``late`` seconds
    after its deadline for a minute. Returns the switch and the messages sent after the
    answer."""
    switch = Switch(policy)
    switch.now = NOW
    switch.receive(invite().to_bytes(), CALLER)
    b_invite = switch.request(CARRIER_B_ADDRESS, "INVITE")
    ok = make_response(b_invite, 200, "OK", "callee-tag")
    ok.headers.add("Contact", "<sip:carrier-b@127.0.0.4:5070>")
    switch.now = NOW + 0.5
    switch.receive(ok.to_bytes(), CARRIER_B_ADDRESS)
    switch.take_all()
    switch.advance(NOW + 60, late=late)
    return switch, switch.take_all()


@pytest.mark.parametrize("reserve_seconds", [1, 2, 300])
def test_the_b2bua_cuts_at_the_balance_limit_even_when_slice_timers_fire_late(
    reserve_seconds: int,
) -> None:
    """0.0500 at 0.6000/min buys 5 s. Each slice's timer fires 300 ms late (a busy loop): the
    extensions must still add up to 5 s after the answer, not to 5 s plus the lateness of
    every slice (free time for the caller, and a supplier paid for more than we bill)."""
    policy, accounting, sink = make_policy(
        snapshot(balance="0.0500", retail=(_rate("1", "0.6000", "1/1"),)),
        reserve_seconds=reserve_seconds,
    )
    switch, after = _drive_a_call_through_the_b2bua(policy, late=0.3)

    assert not switch.b2bua.calls
    [cdr] = sink.records
    assert cdr.answer_time is not None
    lasted = (cdr.end_time - cdr.answer_time).total_seconds()
    assert 5.0 <= lasted <= 5.0 + 0.3 + 0.002, f"cut after {lasted:.3f} s"
    assert (cdr.duration_ms, cdr.billed_seconds, cdr.price, cdr.hangup_reason) == (
        5000,  # what was granted, not what the late timer let through
        5,
        Decimal("0.0500"),
        "max duration",
    )
    byes = {
        dest for message, dest in after if isinstance(message, Request) and message.method == "BYE"
    }
    assert byes == {CALLER, CARRIER_B_ADDRESS}
    assert accounting.balance(ACME) == 0 and accounting.reserved[ACME] == 0


def test_known_sources_are_what_the_flood_gate_lets_through_unmetered() -> None:
    policy, _, _ = make_policy()
    assert policy.known_source("udp", CALLER.host, CALLER.port)  # acme-trunk's ACL
    assert policy.known_source("udp", "127.0.0.3", 5070)  # carrier-a's address
    assert policy.known_source("udp", "127.0.0.4", 40000)  # carrier-b's, any port
    assert not policy.known_source("udp", STRANGER.host, STRANGER.port)
    tls = Address("tls", STRANGER.host, 40000)
    assert not policy.known_source(*tls)
    policy, _, _ = make_policy(snapshot(customer={"acl": (), "tls_fingerprint": FINGERPRINT}))
    _over_tls(policy, {tls: FINGERPRINT})
    assert policy.known_source(*tls)
    assert not policy.known_source("udp", STRANGER.host, 40000)


def test_an_account_that_records_has_its_relayed_calls_recorded() -> None:
    relay = MediaSettings(MediaMode.RELAY, codecs=("PCMA",))
    # The peers relay but do not record: the calls are not recorded until the account asks.
    snap = snapshot(customer={"media": relay}, suppliers={CARRIER_A: {"media": relay}})
    policy, _, _ = make_policy(snap)
    assert [d.media for d in routed(policy).destinations] == [relay, relay]
    accounts = {**snap.accounts, ACME: replace(snap.accounts[ACME], record=True)}
    policy, _, _ = make_policy(replace(snap, accounts=accounts, version=2))
    first, second = (d.media for d in routed(policy).destinations)
    assert first == replace(relay, record=True)  # the customer's relay, recorded
    assert second.record and second.relay  # the supplier's media is direct: still relayed
    # Recording needs the relay: an account's recording does not make a direct call relayed.
    plain = replace(snapshot(), accounts=accounts)
    policy, _, _ = make_policy(plain)
    assert all(not d.media.relay for d in routed(policy).destinations)
    # A supplier's account recording does not record the customer's calls.
    carriers = {**snap.accounts, CARRIER_A: replace(snap.accounts[CARRIER_A], record=True)}
    policy, _, _ = make_policy(replace(snap, accounts=carriers))
    assert not any(d.media.record for d in routed(policy).destinations)
