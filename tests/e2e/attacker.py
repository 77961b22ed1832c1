"""A dictionary attack on a subscriber's digest password, as plain UDP sockets bound to
loopback addresses (each its own source to the node): one REGISTER challenge and one guess
per attempt, every attempt and its answer counted, bounded in count and time by the caller.
Used by tests/e2e/test_security.py (one node) and tests/cluster/test_guard_cluster.py (two).

The attacked account is ``alice``; a REGISTER names the node it is sent to.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from smartswitch.sip.digest import build_authorization

from .node import Node

__all__ = ["Tally", "attack", "dictionary", "guess", "metrics"]


def dictionary(size: int, right_at: int, right: str) -> list[str]:
    """``size`` guesses, the right password ``right`` at index ``right_at``."""
    words = ["letmein", "password", "qwerty", "dragon", "monkey", "sunshine"]
    guesses = [f"{w}{n}{w}" for n, w in zip(range(size), itertools.cycle(words), strict=False)]
    guesses[right_at] = right
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
    nodes: Node | Sequence[Node],
    sources: Sequence[str],
    guesses: Sequence[str],
    right: str,
    workers: int = 8,
    rate: float = 0.0,
) -> Tally:
    """Every guess, from the sources in turn (guess ``n`` from ``sources[n % len]``), to the
    nodes in turn (guess ``n`` to ``nodes[n % len]``), at ``rate`` guesses a second (0: as
    fast as the nodes answer)."""
    targets = [nodes] if isinstance(nodes, Node) else list(nodes)
    tally = Tally()
    started = time.monotonic()

    def one(n: int) -> None:
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        answer = guess(targets[n % len(targets)], sources[n % len(sources)], guesses[n])
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
