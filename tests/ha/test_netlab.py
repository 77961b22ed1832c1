"""The network lab itself: hosts that reach each other, cuts that cut, a clean teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netlab import NetLab, list_namespaces, pid_alive, remove_stale, standard_hosts, wait_for

pytestmark = pytest.mark.netns


def _pings(lab: NetLab, source: str, target: str) -> bool:
    address = lab.host(target).address
    done = lab.run(source, ["ping", "-c", "1", "-W", "0.3", address], check=False)
    return done.returncode == 0


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
print("ready", flush=True)
while True:
    data, source = s.recvfrom(100)
    s.sendto(data, source)
"""

UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
s.sendto(b"hello", (sys.argv[1], 7007))
try:
    print(s.recv(100).decode())
except OSError:
    sys.exit(1)
"""


def _udp_answers(lab: NetLab, source: str, target: str) -> bool:
    address = lab.host(target).address
    done = lab.run(source, [sys.executable, "-c", UDP_ASK, address], check=False)
    return done.returncode == 0 and done.stdout.strip() == "hello"


def test_five_hosts_in_under_two_seconds_and_nothing_left_after_close() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    remove_stale()
    # Its own prefix: the module's lab may exist at the same time.
    lab = NetLab(standard_hosts(3), prefix=f"sslab{os.getpid()}-t")
    lab.start()
    try:
        print(f"\nlab of {len(lab.hosts)} hosts set up in {lab.setup_seconds * 1000:.0f} ms")
        assert lab.setup_seconds < 2.0
        expected = {f"{lab.prefix}-{name}" for name in [*lab.hosts, "lan"]}
        assert set(lab.namespaces()) == expected
        started = lab.popen("n1", ["sleep", "60"])
        # A process the lab did not start itself, detached inside a host: found and killed too.
        out = lab.run("n2", ["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 </dev/null & echo $!"])
        detached = int(out.stdout)
        assert pid_alive(detached)
    finally:
        closing = time.monotonic()
        lab.close()
        print(f"lab torn down in {(time.monotonic() - closing) * 1000:.0f} ms")
    assert lab.namespaces() == []
    assert started.returncode is not None
    wait_for(lambda: not pid_alive(detached), 2.0, what="the detached process gone")


def test_leftovers_of_a_dead_run_are_removed_and_a_live_run_is_left_alone(lab: NetLab) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"sslab{dead.pid}-x"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    inside = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"], start_new_session=True)
    try:
        assert remove_stale() == [stale]
        assert stale not in list_namespaces()
        assert inside.wait(timeout=5.0) == -9
        # The module's lab belongs to a running process (this one): untouched.
        assert set(lab.namespaces()) >= {h.netns for h in lab}
    finally:
        if inside.poll() is None:
            os.killpg(inside.pid, 9)
        subprocess.run(["ip", "netns", "del", stale], check=False, capture_output=True)


def test_every_host_reaches_every_other(lab: NetLab) -> None:
    names = list(lab.hosts)
    for source in names:
        for target in names:
            if source != target:
                assert _pings(lab, source, target), f"{source} -> {target}"
    for host in lab:
        assert lab.addresses_of(host.name) == [host.address]
        assert lab.run(host.name, ["ping", "-c", "1", "-W", "0.3", "127.0.0.1"]).returncode == 0


def test_cut_and_heal_one_link_or_one_protocol(lab: NetLab) -> None:
    lab.popen("n1", [sys.executable, "-c", UDP_ECHO, lab.host("n1").address])
    wait_for(lambda: _udp_answers(lab, "customer", "n1"), 5.0, what="the UDP echo")
    lab.cut("customer", "n1")
    try:
        assert not _pings(lab, "customer", "n1")
        assert not _pings(lab, "n1", "customer")
        assert not _udp_answers(lab, "customer", "n1")
        assert _pings(lab, "customer", "n2")
        assert _pings(lab, "n1", "n2")
    finally:
        lab.heal("customer", "n1")
    assert _pings(lab, "customer", "n1")
    lab.cut("customer", "n1", "udp")
    try:
        assert not _udp_answers(lab, "customer", "n1")
        assert _pings(lab, "customer", "n1")
    finally:
        lab.heal("customer", "n1", "udp")
    assert _udp_answers(lab, "customer", "n1")
    assert lab.cuts() == set()


def test_isolate_and_rejoin_a_host(lab: NetLab) -> None:
    lab.isolate("n2")
    try:
        for other in lab.hosts:
            if other != "n2":
                assert not _pings(lab, other, "n2")
        assert _pings(lab, "n1", "n3")
        # A partition, not a pulled cable: the host's own link stays up.
        link = lab.run("n2", ["ip", "-o", "link", "show", "eth0"]).stdout
        assert "LOWER_UP" in link
    finally:
        lab.rejoin("n2")
    assert _pings(lab, "customer", "n2")


def test_link_down_and_up(lab: NetLab) -> None:
    lab.link_down("n3")
    try:
        assert "state DOWN" in lab.run("n3", ["ip", "-o", "link", "show", "eth0"]).stdout
        assert not _pings(lab, "customer", "n3")
    finally:
        lab.link_up("n3")
    wait_for(lambda: _pings(lab, "customer", "n3"), 5.0, what="n3 reachable again")
