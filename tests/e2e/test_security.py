"""Password guessing against a real node, end to end: a dictionary attack on a subscriber from
one source and spread over hundreds of sources, while the subscriber's own phone (sipp)
registers and calls through it.

The subscriber's password is weak-looking but passes the password policy
(``letmein300letmein``), and the attacker's dictionary holds it: what stops the attack is the
guard, not luck. The attacker is plain UDP sockets bound to loopback addresses (127.0.N.M,
each its own source to the node), one REGISTER challenge and one guess per attempt, every
attempt and its answer counted; the budget is bounded in count and time. Addresses: the
node 127.0.0.1, the phone 127.0.0.2, the supplier 127.0.0.3, the attackers 127.0.10.x and
127.0.20.0 to 127.0.21.x.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from smartswitch.sip.digest import build_authorization

from .conftest import CALLEE_IP, DIALLED, SippFactory, StartBillingNode
from .node import Node, wait_for
from .sipp import SippResult

pytestmark = pytest.mark.e2e

PHONE_IP = "127.0.0.2"
PASSWORD = "letmein300letmein"  # weak-looking, accepted by the policy; in the dictionary below


def document(supplier: str) -> dict[str, Any]:
    return {
        "accounts": [
            {"name": "alice-acct", "currency": "USD", "balance": "10"},
            {"name": "carrier", "currency": "USD"},
        ],
        "tariffs": [
            {"name": "retail", "rates": [{"prefix": "1", "price_per_minute": "0.01"}]},
            {"name": "buy", "rates": [{"prefix": "1", "price_per_minute": "0.005"}]},
        ],
        "peers": [
            {
                "name": "carrier",
                "role": "supplier",
                "account": "carrier",
                "tariff": "buy",
                "address": supplier,
            }
        ],
        "routes": [{"prefix": "1", "suppliers": ["carrier"]}],
        "subscribers": [
            {"username": "alice", "password": PASSWORD, "account": "alice-acct", "tariff": "retail"}
        ],
    }


def dictionary(size: int, right_at: int) -> list[str]:
    """``size`` guesses, the right password at index ``right_at``."""
    words = ["letmein", "password", "qwerty", "dragon", "monkey", "sunshine"]
    guesses = [f"{w}{n}{w}" for n, w in zip(range(size), itertools.cycle(words), strict=False)]
    guesses[right_at] = PASSWORD
    return guesses


# --------------------------------------------------------------------------- the attacker


@dataclass
class Tally:
    """What the attack got: each guess's final answer, counted."""

    answers: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    right_guess_answer: str = ""
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: str, right: bool) -> None:
        with self.lock:
            self.attempts += 1
            self.answers[answer] += 1
            if right:
                self.right_guess_answer = answer


_SEQ = itertools.count(1)


def _register(node: Node, local: tuple[str, int], cseq: int, call_id: str, auth: str) -> bytes:
    host, port = local
    lines = [
        f"REGISTER sip:{node.sip_address} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-atk{next(_SEQ)};rport",
        f"From: <sip:alice@{node.sip_address}>;tag=atk{cseq}",
        f"To: <sip:alice@{node.sip_address}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:alice@{host}:{port}>",
        "Expires: 600",
        "Max-Forwards: 70",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def _answer(sock: socket.socket, request: bytes) -> tuple[int, str]:
    """Send ``request`` and return its final answer (status, WWW-Authenticate of a 401),
    sending it again every T1, doubling, as any UDP client does (RFC 3261 17.1.2.2): the
    node answers an unknown source with no more bytes than it has sent (docs/security.md),
    so a challenge bigger than the first copy comes with the second."""
    interval = 0.5
    sock.send(request)
    while True:
        sock.settimeout(interval)
        try:
            raw = sock.recv(65535)
        except TimeoutError:
            if interval >= 4.0:
                raise
            interval *= 2
            sock.send(request)
            continue
        data = raw.decode("utf-8", "replace")
        status = int(data.split(" ", 2)[1])
        if status < 200:
            continue
        challenge = re.search(r"^WWW-Authenticate: (.*)$", data, re.MULTILINE | re.IGNORECASE)
        return status, challenge.group(1).strip() if challenge else ""


def guess(node: Node, source: str, password: str) -> str:
    """One attempt from ``source``: a REGISTER, its challenge answered with ``password``. The
    outcome: "200" (cracked), "403", "503", or "403 at once" (no challenge: a banned source)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5.0)
        sock.connect((node.sip_host, node.sip_port))
        local = sock.getsockname()
        call_id = f"atk-{next(_SEQ)}@{source}"
        status, challenge = _answer(sock, _register(node, local, 1, call_id, ""))
        if status != 401:
            return f"{status} at once"
        uri = f"sip:{node.sip_address}"
        auth = build_authorization(challenge, "REGISTER", uri, "alice", password, 1)
        return str(_answer(sock, _register(node, local, 2, call_id, auth))[0])


def attack(
    node: Node,
    sources: Sequence[str],
    guesses: Sequence[str],
    right: str,
    workers: int = 8,
    rate: float = 0.0,
) -> Tally:
    """Every guess, from the sources in turn (guess ``n`` from ``sources[n % len]``), at
    ``rate`` guesses a second (0: as fast as the node answers)."""
    tally = Tally()
    started = time.monotonic()

    def one(n: int) -> None:
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        answer = guess(node, sources[n % len(sources)], guesses[n])
        tally.add(answer, guesses[n] == right)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(guesses))))
    tally.seconds = time.monotonic() - started
    return tally


# --------------------------------------------------------------------------- helpers


def metrics(node: Node) -> dict[str, float]:
    url = f"http://{node.http_host}:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _ok(result: SippResult) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (1, 0), result.describe()


def phone_registers(sipp: SippFactory, node: Node, name: str) -> SippResult:
    return sipp.uac(
        node.sip_address,
        "reg_phone",
        ip=PHONE_IP,
        service="alice",
        duration_ms=100,
        name=name,
        keys={"expires": "600"},
        extra=("-au", "alice", "-ap", PASSWORD),
    )


def phone_calls(sipp: SippFactory, node: Node, name: str) -> SippResult:
    return sipp.uac(
        node.sip_address,
        "uac_auth",
        ip=PHONE_IP,
        duration_ms=300,
        name=name,
        extra=("-au", "alice", "-ap", PASSWORD, "-auth_uri", f"{DIALLED}@{node.sip_address}"),
    )


@pytest.fixture
def world(
    start_billing_node: StartBillingNode, sipp: SippFactory
) -> Iterator[tuple[Node, SippFactory]]:
    supplier = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None, name="supplier")
    node = start_billing_node(
        document(SippFactory.address(supplier)), digest_algorithms=["MD5"], log_level="info"
    )
    _ok(phone_registers(sipp, node, "phone-before"))  # the phone's address is now trusted
    yield node, sipp


def _report(shape: str, tally: Tally) -> None:
    print(
        f"\n{shape}: {tally.attempts} guesses in {tally.seconds:.1f} s, answers "
        f"{dict(sorted(tally.answers.items()))}, the right password got {tally.right_guess_answer}"
    )


# --------------------------------------------------------------------------- the attacks


def test_one_source_is_banned_and_the_right_guess_never_checked(
    world: tuple[Node, SippFactory],
) -> None:
    node, sipp = world
    guesses = dictionary(60, right_at=30)
    tally = attack(node, ["127.0.10.1"], guesses, PASSWORD, workers=1)
    _report("one source", tally)
    assert tally.answers["200"] == 0 and tally.right_guess_answer == "403 at once"
    # Five wrong answers checked, then the source is banned: no challenge, no digest work.
    assert tally.answers["403"] == 5
    assert tally.answers["403 at once"] == 55
    m = metrics(node)
    assert m['smartswitch_digest_failures_total{reason="bad-password"}'] == 5
    assert m["smartswitch_sources_banned"] == 1
    log = node.log_text()
    assert (
        "smartswitch security: auth-failure source=127.0.10.1 account=alice reason=bad-password"
        in log
    )
    assert "smartswitch security: source-banned source=127.0.10.1 seconds=300" in log
    # The phone, at its own address, registers and calls as ever.
    _ok(phone_registers(sipp, node, "phone-after"))
    _ok(phone_calls(sipp, node, "call-after"))


def test_hundreds_of_sources_back_the_account_off_and_the_phone_keeps_working(
    world: tuple[Node, SippFactory],
) -> None:
    """300 addresses, two guesses each (under every per-address limit), 600 guesses at 40 a
    second with the right one late: after 10 failures the account's credentials from new
    addresses are refused unchecked. Meanwhile the phone re-registers and places a call."""
    node, sipp = world
    sources = [f"127.0.{20 + n // 200}.{n % 200 + 1}" for n in range(300)]
    guesses = dictionary(600, right_at=450)
    results: dict[str, Tally] = {}
    attacker = threading.Thread(
        target=lambda: results.setdefault(
            "tally", attack(node, sources, guesses, PASSWORD, rate=40)
        ),
        name="attacker",
    )
    attacker.start()
    try:
        wait_for(
            lambda: metrics(node).get("smartswitch_accounts_under_attack", 0) >= 1,
            30,
            "alice to go into back-off",
        )
        # During the attack: the phone's REGISTER and a call, from its trusted address.
        _ok(phone_registers(sipp, node, "phone-during"))
        _ok(phone_calls(sipp, node, "call-during"))
        assert attacker.is_alive(), "the attack was over before the phone was done"
    finally:
        attacker.join(120)
    tally = results["tally"]
    _report("hundreds of sources", tally)
    assert tally.attempts == 600 and tally.answers["200"] == 0
    assert tally.right_guess_answer == "403"  # refused like any wrong guess, never checked
    m = metrics(node)
    checked = m['smartswitch_digest_failures_total{reason="bad-password"}']
    refused = m['smartswitch_auth_refused_total{reason="account-backoff"}']
    assert checked == 10 and refused == 590, (checked, refused)
    assert m["smartswitch_account_backoffs_total"] == 1
    assert m["smartswitch_sources_banned"] == 0  # nobody over the per-address limit
    log = node.log_text()
    assert "smartswitch security: account-backoff account=alice seconds=60" in log
    assert re.search(
        r"smartswitch security: refused source=127\.0\.\d+\.\d+ account=alice "
        r"reason=account-backoff",
        log,
    )
    [cdr] = node.wait_cdrs(1)
    assert (cdr["subscriber"], cdr["sip_code"]) == ("alice", 200)
