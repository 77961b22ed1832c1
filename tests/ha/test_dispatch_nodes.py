"""Automatic load balancing across separate hosts: three ``smartswitch run`` in network
namespaces, each running its keepalived for the shared IP and a dispatcher on it
(``dispatch_listen`` = the shared IP's SIP port, bound with ``IP_FREEBIND``: only the holder
receives there), the customer's sipp in its own host calling the shared IP, the supplier's
sipp in another, a stranger host, and the "bind address" setting empty (each node originates
from its own address: load balancing and origination from the shared IP exclude each other).

Each node has its own SQLite database provisioned with the same document, and the ``nodes``
table every node would get by replication (the three members), so heartbeats flow between
the nodes' dedicated IPs on the bus. Every node refuses an INVITE from outside the cluster
that carries no valid dispatch token.

In each mode (proxy, then redirect: every node restarted with the other setting) 3 000 calls
at 150 calls/s go to the shared IP; once 1 200 have been dispatched a node that does not
hold the shared IP is killed (node and keepalived, SIGKILL). The holder's dispatcher counters
(its ``/metrics``, read every 0.2 s from inside its host) show: the three shares within
+/-20 % of even before the kill, no new call to the dead node from 3 s after it, the two
others taking its share within +/-20 % of each other; sipp's failed calls are no more than
the calls sent to the dead node in its last seconds (those it took down with it).

    flock /tmp/ss-heavy.lock pytest -m netns tests/ha/test_dispatch_nodes.py -s --durations=0
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netlab import NetLab, NetLabError, remove_stale, standard_hosts, wait_for
from smartswitch.cluster.dispatch import Tokens

from .harness import SHARED_IP, _Lines, child_env
from .switchnodes import (
    CLUSTER_SECRET,
    DIALLED,
    SIP_PORT,
    NodeCluster,
    SwitchNode,
    customer_load,
    python_module,
    start_cluster,
)

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

NODES = ["n1", "n2", "n3"]
STRANGER_IP = "10.77.0.41"
CALLS = 3000
RATE = 150.0
HOLD_MS = 1000
KILL_AT = 1200
"""Calls dispatched when a node is killed (8 s into the run)."""
NO_CALL_AFTER = 3.0
"""The issue's promise: a dead node gets no new call this long after it died."""
TOLERANCE = 0.2
CHOSEN = 'smartswitch_dispatch_chosen_total{{node="{}"}}'
GATE = 'smartswitch_dispatch_gate_total{{outcome="{}"}}'


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    """The module's LAN: the three nodes, the customer, the supplier and a stranger."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    missing = [p for p in ("ip", "nft", "keepalived", "setpriv", "sipp") if not shutil.which(p)]
    if missing:
        pytest.skip("missing " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
    remove_stale()
    with NetLab(standard_hosts(3) | {"stranger": STRANGER_IP}) as made:
        yield made


@pytest.fixture(scope="module")
def nodes(lab: NetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    settings = {
        "dispatch_mode": "proxy",
        "dispatch_listen": f"{SHARED_IP}:{SIP_PORT}",
        "dispatch_require_token": True,
        "capacity": 1000,
    }
    cluster = start_cluster(
        lab,
        tmp_path_factory.mktemp("dispatchnodes"),
        NODES,
        bind_address="",
        settings=settings,
        members=True,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def _tails(cluster: NodeCluster) -> str:
    return "".join(n.log_tail() for n in cluster.nodes.values())


def _all_up(node: SwitchNode) -> bool:
    try:
        metrics = node.metrics()
    except (NetLabError, ValueError, IndexError):
        return False  # the node not serving HTTP yet
    return all(metrics.get(f'smartswitch_cluster_node_up{{node="{n}"}}') == 1 for n in NODES)


def _set_mode(cluster: NodeCluster, mode: str) -> str:
    """Every node restarted with ``dispatch_mode`` = ``mode``; the holder, once its
    dispatcher hears every node up."""
    for node in cluster.nodes.values():
        node.settings["dispatch_mode"] = mode
        node.stop()
    holder = cluster.ready(60.0)
    wait_for(
        lambda: _all_up(cluster.nodes[holder]),
        30.0,
        interval=0.2,
        what=f"every node up on the holder {holder}",
    )
    return holder


class MetricsPoller:
    """:mod:`ha.metricspoll` reading the holder's ``/metrics`` every 0.2 s from its host."""

    def __init__(self, lab: NetLab, node: SwitchNode, duration: float) -> None:
        self.proc = lab.popen(
            node.name,
            [sys.executable, "-m", "ha.metricspoll", node.metrics_url, "0.2", str(duration)],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        self.lab = lab
        self.lines = _Lines(self.proc, json.loads)

    def timeline(self) -> list[tuple[float, dict[str, int]]]:
        """(time, calls chosen per node) at each reading."""
        return [
            (float(item["t"]), {n: int(item["m"].get(CHOSEN.format(n), 0)) for n in NODES})
            for item in self.lines.snapshot()
        ]

    def wait_dispatched(self, calls: int, timeout: float) -> dict[str, int]:
        item = self.lines.wait(
            lambda i: sum(i["m"].get(CHOSEN.format(n), 0) for n in NODES) >= calls, timeout
        )
        return {n: int(item["m"].get(CHOSEN.format(n), 0)) for n in NODES}

    def stop(self) -> None:
        self.lab.kill(self.proc)
        self.proc.wait(timeout=5.0)


def _even(counts: list[int], tolerance: float = TOLERANCE) -> bool:
    mean = sum(counts) / len(counts)
    return all(abs(c - mean) <= tolerance * mean for c in counts)


def _run_with_a_kill(cluster: NodeCluster, mode: str) -> dict[str, Any]:
    holder = _set_mode(cluster, mode)
    victim = next(n for n in reversed(NODES) if n != holder)
    survivors = [n for n in NODES if n != victim]
    poller = MetricsPoller(cluster.lab, cluster.nodes[holder], CALLS / RATE + 120)
    try:
        load = customer_load(
            cluster.sipps,
            cluster.lab,
            f"{mode}-load",
            rate=RATE,
            calls=CALLS,
            hold_ms=HOLD_MS,
            scenario="uac" if mode == "proxy" else "uac_redirect",
        )
        at_kill = poller.wait_dispatched(KILL_AT, KILL_AT / RATE + 30)
        cluster.nodes[victim].crash()
        killed = time.monotonic()
        result = load.wait(CALLS / RATE + 90)
        ended = time.monotonic()
        # A reading after sipp's end: every call dispatched is counted.
        wait_for(
            lambda: any(t > ended for t, _ in poller.timeline()[-1:]),
            5.0,
            what="a reading after the run",
        )
        timeline = poller.timeline()
    finally:
        poller.stop()
    final = timeline[-1][1]

    shares = [at_kill[n] for n in NODES]
    gained = [final[n] - at_kill[n] for n in survivors]
    later = [counts for t, counts in timeline if t >= killed + NO_CALL_AFTER]
    last_to_victim = max(
        (t for t, counts in timeline if counts[victim] < final[victim]), default=killed
    )
    # Failures only among the dead node's calls: those in progress when it died (1 s calls,
    # set-up included) and those it was sent until taken out.
    lost_bound = final[victim] - next(
        (counts[victim] for t, counts in reversed(timeline) if t <= killed - 2.5), 0
    )
    print(
        f"\n{mode}: holder {holder}, {victim} killed; shares at the kill {at_kill},"
        f" after it {dict(zip(survivors, gained, strict=True))}; {victim} last chosen"
        f" {last_to_victim - killed:.2f} s after the kill; failed {result.failed}"
        f" (bound {lost_bound}), successful {result.successful}"
    )
    assert _even(shares), (mode, shares)
    assert later, "the run ended too soon after the kill"
    assert later[0][victim] == final[victim], (mode, later[0], final)
    assert _even(gained), (mode, gained)
    assert result.successful + result.failed == CALLS, result.describe()
    assert result.failed <= lost_bound, result.describe() + _tails(cluster)
    return {"holder": holder, "victim": victim, "survivors": survivors}


def test_proxy_mode_spreads_evenly_and_a_killed_nodes_share_goes_to_both_others(
    nodes: NodeCluster,
) -> None:
    run = _run_with_a_kill(nodes, "proxy")
    # The non-holder survivor took its calls with the customer's real source from the
    # holder's forwards (acme's ACL matched through the dispatcher: 0 failures above).
    other = next(n for n in run["survivors"] if n != run["holder"])
    assert nodes.nodes[other].metrics()[GATE.format("forwarded")] > 0


def test_redirect_mode_spreads_evenly_and_a_killed_nodes_share_goes_to_both_others(
    nodes: NodeCluster,
) -> None:
    run = _run_with_a_kill(nodes, "redirect")
    other = next(n for n in run["survivors"] if n != run["holder"])
    assert nodes.nodes[other].metrics()[GATE.format("token_ok")] > 0


def _raw_invite(lab: NetLab, host: str, dest: str, *args: str) -> str:
    done = lab.run(
        host,
        python_module("ha.rawinvite", lab.host(host).address, dest, DIALLED, *args),
        check=False,
        timeout=20.0,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_forged_source_header_from_a_non_member_host_is_ignored(nodes: NodeCluster) -> None:
    """The stranger writes the customer's address in the dispatcher's header and sends to a
    node directly, with a valid token so that only the header decides: the node identifies
    it by its real source (no customer there) and refuses the call."""
    holder = nodes.ready()
    target = nodes.nodes[next(n for n in NODES if n != holder)]
    before = target.metrics()
    call_id = f"forged-{time.monotonic_ns()}"
    token = Tokens(CLUSTER_SECRET).make(target.name, call_id, time.time())
    customer = nodes.lab.host("customer").address
    status = _raw_invite(
        nodes.lab,
        "stranger",
        f"{target.address}:{SIP_PORT}",
        "--uri-params",
        f";ss-token={token}",
        "--header",
        f"X-Smartswitch-Source: {customer}:5061",
        "--call-id",
        call_id,
    )
    assert status.startswith("SIP/2.0 403"), status
    assert "dispatch token" not in status, status
    after = target.metrics()
    for outcome in ("forged_header", "token_ok"):
        key = GATE.format(outcome)
        assert after[key] == before.get(key, 0) + 1, (outcome, after)
    assert after[GATE.format("forwarded")] == before.get(GATE.format("forwarded"), 0)


def test_the_customer_going_around_the_dispatcher_without_a_token_is_refused(
    nodes: NodeCluster,
) -> None:
    holder = nodes.ready()
    target = nodes.nodes[next(n for n in NODES if n != holder)]
    dest = f"{target.address}:{SIP_PORT}"
    status = _raw_invite(nodes.lab, "customer", dest)
    assert status == "SIP/2.0 403 Forbidden (no dispatch token)", status
    other = next(n for n in NODES if n != target.name)
    token = Tokens(CLUSTER_SECRET).make(other, "another-call", time.time())
    status = _raw_invite(nodes.lab, "customer", dest, "--uri-params", f";ss-token={token}")
    assert status.startswith("SIP/2.0 403 Forbidden ("), status
