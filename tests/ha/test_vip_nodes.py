"""The shared IP with real nodes: three ``smartswitch run`` in network namespaces, each running
its own keepalived (the node writes, starts and supervises it), sipp as the customer (calling
the shared IP) and as the supplier (UAS and registrar), the "bind address" setting = the
shared IP (only the holder originates and registers, from the shared IP).

Each node has its own SQLite database, provisioned with the same document: the shared IP does
not need replication. The figures printed here are in bench/README.md ("Shared IP").

    flock /tmp/ss-heavy.lock pytest -m netns tests/ha/test_vip_nodes.py -s
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from netlab import NetLab, wait_for

from .harness import SHARED_IP, child_env, summary
from .switchnodes import (
    DUMPCAP,
    TSHARK,
    NodeCluster,
    SupplierCapture,
    answered_after,
    by_source,
    customer_load,
    start_cluster,
)

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

NODES = ["n1", "n2", "n3"]
#: What the tests promise: a crash or a healed split brain costs the customer under a second.
LIMIT = 1.0
RATE = 20.0  # calls/s from the customer
HOLD_MS = 1000  # each call's length


@pytest.fixture(scope="module")
def nodes(lab: NetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    missing = [
        p for p in ("keepalived", "setpriv", "sipp", "dumpcap", "tshark") if not shutil.which(p)
    ]
    if missing or DUMPCAP is None or TSHARK is None:
        pytest.skip("missing " + ", ".join(missing) + " (scripts/install-system-deps.sh)")
    cluster = start_cluster(lab, tmp_path_factory.mktemp("vipnodes"), NODES)
    try:
        yield cluster
    finally:
        cluster.stop()


def _tails(cluster: NodeCluster) -> str:
    return "".join(n.log_tail() for n in cluster.nodes.values())


def test_only_the_holder_registers_and_the_status_says_who_holds_since_when(
    nodes: NodeCluster,
) -> None:
    holder = nodes.ready()
    rows = {name: node.status() for name, node in nodes.nodes.items()}
    for name, row in rows.items():
        vip = row["vip"]
        assert vip["holder"] is (name == holder), row
        assert vip["state"] == ("MASTER" if name == holder else "BACKUP")
        assert vip["shared_ip"] == SHARED_IP and vip["since"] <= time.time()

    def registered() -> bool:
        states = [r["state"] for r in nodes.nodes[holder].status().get("outbound", [])]
        return states == ["registered"]

    wait_for(registered, 10.0, interval=0.2, what="the holder registered with the supplier")
    # The backups register with no one (one registration per supplier: the holder's).
    for name, row in rows.items():
        if name != holder:
            assert all(r["state"] != "registered" for r in row.get("outbound", [])), row
    table = nodes.nodes[holder].status_table()
    assert f"holds {SHARED_IP} since" in table, table


def test_failover_under_load_new_calls_and_the_registration_follow_the_shared_ip(
    nodes: NodeCluster, ha_timings: dict[str, list[float]]
) -> None:
    lab = nodes.lab
    holder = nodes.ready()
    dead = nodes.nodes[holder]
    capture = SupplierCapture(lab, nodes.workdir / "failover.pcapng")
    calls = int(RATE * 12)
    load = customer_load(nodes.sipps, lab, "failover-load", rate=RATE, calls=calls, hold_ms=HOLD_MS)
    # Steady load first (the scenario, not a wait for a condition): 4 s of calls.
    time.sleep(4.0)
    killed = dead.crash()
    killed_mono = time.monotonic()

    def new_holder() -> str | None:
        # The dead host's interface still carries the address (nothing removed it).
        others = [n for n in nodes.holders() if n != holder]
        return others[0] if len(others) == 1 else None

    new = wait_for(new_holder, 10.0, what="a new holder")
    moved = time.monotonic() - killed_mono
    result = load.wait(calls / RATE + 90)
    requests = capture.requests()
    answered = answered_after(nodes.nodes[new], killed)
    assert answered, "no call answered by the new holder" + _tails(nodes)
    first = answered[0] - killed
    failed = result.failed
    # Lost: the calls in progress on the dead node (RATE * hold) and those sent while the
    # address moved; INVITEs sent during the move are retransmitted (T1 = 0.5 s) to the new
    # holder and succeed.
    bound = int(RATE * (HOLD_MS / 1000 + first + 0.5)) + 2
    print(
        f"\nfail-over under {RATE:g} calls/s ({HOLD_MS} ms calls): {holder} killed, {new} holds"
        f" the address after {moved * 1000:.0f} ms (seen by polling), first new call answered"
        f" by {new} {first * 1000:.0f} ms after the kill; {failed} of {calls} calls failed"
        f" (bound {bound}), {result.successful} succeeded"
    )
    ha_timings["nodes: kill -> first new call answered"] = [first]
    assert result.successful + failed == calls, result.describe()
    assert failed <= bound, result.describe()
    assert first < LIMIT
    # The supplier saw the shared IP only: every INVITE and every REGISTER came from it.
    invites = by_source(requests, "INVITE")
    registers = [r for r in requests if r["sip.Method"] == "REGISTER"]
    assert set(invites) == {SHARED_IP}, invites
    assert {r["ip.src"] for r in registers} == {SHARED_IP}, registers
    assert all(r["sip.Via.sent-by.address"] == SHARED_IP for r in registers), registers
    # One registration (the holder's at start, before the capture); after the fail-over the
    # new holder registers again, once, within seconds.
    assert len(registers) == 1, registers
    reregistered = float(registers[0]["frame.time_epoch"]) - killed
    print(f"new holder {new} registered {reregistered * 1000:.0f} ms after the kill")
    ha_timings["nodes: kill -> new holder registered"] = [reregistered]
    assert 0 < reregistered < 5.0
    # The dead node comes back: its stale address is removed, it waits as BACKUP.
    assert SHARED_IP in lab.addresses_of(holder)
    dead.start()
    wait_for(lambda: dead.vip_state() == "BACKUP", 30.0, interval=0.2, what="back as BACKUP")
    assert SHARED_IP not in lab.addresses_of(holder)
    assert nodes.holders() == [new]
    assert "removed a stale" in dead.log_path.read_text()


def _make_n1_the_holder(nodes: NodeCluster) -> None:
    """The holder's SIP loop stuck (SIGSTOP) until n1 (the highest priority) takes over: the
    health check is the node's SIP loop answering."""
    holder = nodes.ready()
    if holder == "n1":
        return
    stalled = nodes.nodes[holder]
    stalled.stall()
    try:
        wait_for(lambda: nodes.holders() == ["n1"], 15.0, what="n1 holding the shared IP")
    finally:
        stalled.resume()
    assert nodes.ready() == "n1"


class Prober:
    """The customer's OPTIONS to the shared IP every 20 ms (:mod:`ha.prober`)."""

    def __init__(self, lab: NetLab) -> None:
        self.proc = lab.popen(
            "customer",
            [sys.executable, "-m", "ha.prober", SHARED_IP, "0.02", "600"],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "started"
        self.answers: list[float] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[2] == SHARED_IP:
                self.answers.append(float(parts[0]))

    def answered_after(self, at: float, timeout: float) -> float:
        return wait_for(
            lambda: next((a for a in list(self.answers) if a >= at), None),
            timeout,
            what="an answer from the shared IP",
        )


def _split_and_heal(nodes: NodeCluster, prober: Prober, other: str) -> tuple[float, float]:
    """Cut VRRP between n1 (the holder) and ``other`` until both hold the address and the
    customer is on ``other`` (its gratuitous ARPs), then heal. Returns the seconds from the
    heal to one holder, and to the customer's first answer once its ARP entry is n1's."""
    lab = nodes.lab
    assert nodes.ready() == "n1"
    lab.cut("n1", other, "vrrp")
    both = sorted(["n1", other])
    wait_for(lambda: sorted(nodes.holders()) == both, 5.0, what="split brain")
    other_mac, n1_mac = lab.mac_of(other), lab.mac_of("n1")
    wait_for(
        lambda: lab.neighbour("customer", SHARED_IP) == other_mac,
        5.0,
        what="the customer on the newer holder",
    )
    healed = time.monotonic()
    lab.heal("n1", other, "vrrp")
    wait_for(lambda: nodes.holders() == ["n1"], 5.0, what="one holder")
    one = time.monotonic() - healed
    back_at = wait_for(
        lambda: time.monotonic() if lab.neighbour("customer", SHARED_IP) == n1_mac else None,
        25.0,
        what="the customer back on n1",
    )
    answer = prober.answered_after(back_at, 5.0)
    return one, answer - healed


def test_split_brain_heals_five_times_one_holder_and_the_customer_back_within_a_second(
    nodes: NodeCluster, ha_timings: dict[str, list[float]]
) -> None:
    """VRRP cut between n1 (the holder, highest priority) and a lower node: both hold the
    address; on healing exactly one keeps it, and the customer is back on it at once
    (``higher_prio_send_advert``: otherwise the customer can keep the loser's MAC ~20 s)."""
    lab = nodes.lab
    _make_n1_the_holder(nodes)
    prober = Prober(lab)
    one_holder: list[float] = []
    reached: list[float] = []
    try:
        for run in range(5):
            other = "n2" if run % 2 == 0 else "n3"
            one, back = _split_and_heal(nodes, prober, other)
            one_holder.append(one)
            reached.append(back)
            print(
                f"\nheal {run + 1} (n1/{other}): one holder after {one * 1000:.0f} ms,"
                f" customer answered via n1 after {back * 1000:.0f} ms"
            )
    finally:
        lab.kill(prober.proc)
        lab.heal_all()
    ha_timings["nodes: split brain healed -> one holder"] = one_holder
    ha_timings["nodes: split brain healed -> customer answered"] = reached
    print(f"split brain healed with real nodes, customer answered: {summary(reached)}")
    assert max(one_holder) < LIMIT
    assert max(reached) < LIMIT


def test_a_stuck_node_gives_the_shared_ip_up(nodes: NodeCluster) -> None:
    """The node's own SIP loop is the health check: a stopped node process loses the
    address although its keepalived lives."""
    holder = nodes.ready()
    node = nodes.nodes[holder]
    stuck = time.monotonic()
    node.stall()
    try:
        wait_for(
            lambda: [n for n in nodes.holders() if n != holder] or None,
            10.0,
            what="another holder",
        )
        took = time.monotonic() - stuck
        wait_for(lambda: holder not in nodes.holders(), 5.0, what="the stuck node let go")
    finally:
        node.resume()
    print(f"\nstuck node {holder}: another node holds the address after {took * 1000:.0f} ms")
    assert node.keepalived_pid() is not None
    nodes.ready()
