"""The shared IP's pure parts: settings, keepalived.conf, the health check, the FIFO, views.

keepalived itself runs in tests/ha (network namespaces, root). Here: what needs no root, plus
the health-check script run for real against a SIP stand-in built from our own parser.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartswitch.cluster.vip import (
    KeepalivedSupervisor,
    VipConfigError,
    VipError,
    VipFiles,
    VipSettings,
    VipStatus,
    VrrpState,
    parse_fifo_line,
    render_check_script,
    render_keepalived_conf,
    shared_ip_view,
    udp_socket_freebind,
    with_peers,
)
from smartswitch.sip.message import Request, make_response, parse_message


def settings(**overrides: Any) -> VipSettings:
    fields: dict[str, Any] = {
        "shared_ip": "10.0.0.10",
        "interface": "eth0",
        "virtual_router_id": 51,
        "priority": 150,
        "unicast_src_ip": "10.0.0.11",
        "peers": ("10.0.0.13", "10.0.0.12"),
        "sip_check_host": "10.0.0.11",
        "node_name": "node1",
    }
    fields.update(overrides)
    return VipSettings(**fields)


EXPECTED_CONF = """\
# Written by smartswitch (cluster/vip.py) at every start: edits here are lost.
# Shared IP 10.0.0.10/24 on eth0, VRRP router 51, node node1 (priority 150).
global_defs {
    router_id node1
    vrrp_version 3
    vrrp_notify_fifo /var/lib/smartswitch/vip.fifo
    script_user root
    enable_script_security
}

vrrp_script smartswitch_sip {
    script "/var/lib/smartswitch/vip-check.sh"
    interval 1
    timeout 1
    fall 2
    rise 2
    init_fail
}

vrrp_instance smartswitch {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 0.10
    nopreempt
    accept
    higher_prio_send_advert true
    garp_master_repeat 3
    garp_master_delay 1
    garp_master_refresh 2
    unicast_src_ip 10.0.0.11
    check_unicast_src
    unicast_peer {
        10.0.0.12 min_ttl 255
        10.0.0.13 min_ttl 255
    }
    virtual_ipaddress {
        10.0.0.10/24 dev eth0
    }
    track_script {
        smartswitch_sip
    }
}
"""


def test_keepalived_conf_as_rendered() -> None:
    files = VipFiles.under(Path("/var/lib/smartswitch"))
    text = render_keepalived_conf(settings(), files, script_user="root")
    conf_lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    expected = [line for line in EXPECTED_CONF.splitlines() if not line.lstrip().startswith("#")]
    assert conf_lines == expected


def test_preemption_is_a_choice_and_the_peers_can_change() -> None:
    files = VipFiles.under(Path("/d"))
    text = render_keepalived_conf(settings(preempt=True), files, script_user="smartswitch")
    assert "    preempt\n" in text and "nopreempt" not in text
    assert "script_user smartswitch" in text
    moved = with_peers(settings(), ["10.0.0.11", "10.0.0.14"])
    assert moved.peers == ("10.0.0.14",)


def test_a_lone_node_runs_multicast_until_it_has_peers() -> None:
    # keepalived refuses unicast keywords without a peer.
    text = render_keepalived_conf(settings(peers=()), VipFiles.under(Path("/d")), script_user="r")
    assert "unicast" not in text.replace("No other member yet: multicast", "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shared_ip", "10.0.0"),
        ("shared_ip", "10.0.0.11"),  # a node's own address
        ("shared_ip", "fe80::1"),
        ("priority", 255),
        ("priority", 0),
        ("priority", True),
        ("virtual_router_id", 256),
        ("advert_interval", 0.005),
        ("advert_interval", 0.105),
        ("advert_interval", 41.0),
        ("peers", ("10.0.0.12", "10.0.0.12")),
        ("peers", ("10.0.0.11",)),
        ("interface", "eth0 dev lo"),
        ("node_name", "node#1"),
        ("check_reply_timeout", 1.0),
        ("check_interval", 0),
        ("sip_check_port", 70000),
    ],
)
def test_invalid_settings_are_refused(field: str, value: Any) -> None:
    with pytest.raises(VipConfigError):
        settings(**{field: value})


@pytest.mark.parametrize("path", ["/tmp/a b", "/tmp/x#y", "/tmp/q'uote", "/tmp/bang!"])
def test_a_data_dir_keepalived_cannot_name_is_refused(path: str) -> None:
    with pytest.raises(VipConfigError):
        VipFiles.under(Path(path))


def test_failover_estimate_is_three_adverts_and_the_skew() -> None:
    assert settings(advert_interval=0.1, priority=128).failover_seconds == pytest.approx(0.35)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('INSTANCE "smartswitch" MASTER 150', ("smartswitch", VrrpState.MASTER)),
        ('INSTANCE "smartswitch" BACKUP 150\n', ("smartswitch", VrrpState.BACKUP)),
        ('INSTANCE "smartswitch" FAULT 150', ("smartswitch", VrrpState.FAULT)),
        ('INSTANCE "smartswitch" STOP 150', ("smartswitch", VrrpState.STOPPED)),
        ('INSTANCE "other" MASTER 100', ("other", VrrpState.MASTER)),
        ('GROUP "g" MASTER', None),
        ('INSTANCE "smartswitch" WEIRD 1', None),
        ("garbage", None),
    ],
)
def test_fifo_lines(line: str, expected: tuple[str, VrrpState] | None) -> None:
    assert parse_fifo_line(line) == expected


def _status(node: str, state: VrrpState, since: float) -> VipStatus:
    return VipStatus(node, "10.0.0.10", "eth0", state, since, 100, 42, 0, None)


def test_shared_ip_view_names_the_holder_and_a_split_brain() -> None:
    nobody = shared_ip_view([_status("a", VrrpState.BACKUP, 1.0)])
    assert nobody.holder is None and nobody.holders == () and not nobody.split_brain
    one = shared_ip_view([_status("a", VrrpState.BACKUP, 1.0), _status("b", VrrpState.MASTER, 2)])
    assert one.holder == "b" and not one.split_brain
    two = shared_ip_view([_status("a", VrrpState.MASTER, 5.0), _status("b", VrrpState.MASTER, 2.0)])
    assert two.holders == ("b", "a") and two.holder == "b" and two.split_brain


def test_status_survives_the_trip_over_the_bus() -> None:
    status = _status("a", VrrpState.FAULT, 1234.5)
    assert VipStatus.from_dict(status.as_dict()) == status
    assert status.as_dict()["holder"] is False


def test_freebind_binds_an_address_the_host_does_not_have() -> None:
    address = "192.0.2.77"  # TEST-NET-1: never on this host
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with plain, pytest.raises(OSError) as refused:
        plain.bind((address, 0))
    assert refused.value.errno == errno.EADDRNOTAVAIL
    with udp_socket_freebind(address, 0) as sock:
        assert sock.getsockname()[0] == address


# --- the health check, run for real ---------------------------------------------------------


class SipStandIn:
    """A UDP SIP endpoint on loopback answering with our own parser and ``make_response``."""

    def __init__(self, status: Callable[[], int | None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.status = status
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = parse_message(data)
            assert isinstance(request, Request)
            self.requests.append(request)
            status = self.status()
            if status is not None:
                response = make_response(request, status, None, "tag1")
                self.sock.sendto(response.to_bytes(), source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def stand_in() -> Iterator[tuple[SipStandIn, list[int | None]]]:
    answer: list[int | None] = [200]
    server = SipStandIn(lambda: answer[0])
    yield server, answer
    server.close()


def _check_script(tmp_path: Path, port: int) -> Path:
    script = tmp_path / "vip-check.sh"
    script.write_text(
        # A reply timeout with room for a loaded test machine (the stand-in answers from a
        # thread of the test process); the node's default is 0.2 s.
        render_check_script(
            settings(sip_check_host="127.0.0.1", sip_check_port=port, check_reply_timeout=0.5)
        )
    )
    script.chmod(0o700)
    return script


def _run(script: Path) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run([str(script)], capture_output=True, timeout=10, check=False)
    return done.returncode, time.monotonic() - started


def test_health_check_passes_on_a_200_and_fails_otherwise(
    tmp_path: Path, stand_in: tuple[SipStandIn, list[int | None]]
) -> None:
    server, answer = stand_in
    script = _check_script(tmp_path, server.port)
    assert _run(script)[0] == 0
    request = server.requests[-1]
    assert request.method == "OPTIONS"
    assert "rport" in request.top_via.params
    assert (request.top_via.params["branch"] or "").startswith("z9hG4bK")
    answer[0] = 503
    assert _run(script)[0] == 1
    answer[0] = None  # a stuck SIP loop: nothing comes back
    status, took = _run(script)
    assert status != 0
    assert took < 3.0  # the check's own reply timeout (0.5 s) plus bash's start


def test_health_check_fails_at_once_when_nothing_listens(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, took = _run(_check_script(tmp_path, port))
    assert status != 0 and took < 3.0


def test_health_check_cost(tmp_path: Path, stand_in: tuple[SipStandIn, list[int | None]]) -> None:
    """It runs every check_interval on every node: keep it cheap. Prints CPU ms per run."""
    server, _ = stand_in
    script = _check_script(tmp_path, server.port)
    runs = 20
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    for _ in range(runs):
        assert _run(script)[0] == 0
    wall = (time.monotonic() - started) / runs
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / runs
    print(f"\nhealth check: {cpu * 1000:.1f} ms CPU, {wall * 1000:.1f} ms wall per run")
    assert cpu < 0.05


# --- keepalived's own opinion of the file ---------------------------------------------------


@pytest.fixture
def interface() -> str:
    """An interface keepalived can run VRRP on (skips without keepalived or root)."""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived not installed (scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("keepalived checks its scripts' security as root")
    interfaces = [name for _, name in socket.if_nameindex() if _multicast(name)]
    if not interfaces:
        pytest.skip("no interface that does multicast")
    return interfaces[0]


def test_keepalived_accepts_the_rendered_config(tmp_path: Path, interface: str) -> None:
    for peers in [("10.0.0.12", "10.0.0.13"), ()]:
        s = settings(interface=interface, peers=peers)
        supervisor = KeepalivedSupervisor(s, data_dir=tmp_path)
        asyncio.run(supervisor.install_files())
    assert (tmp_path / "vip-check.sh").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "keepalived.conf").stat().st_mode & 0o777 == 0o600


def _multicast(interface: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{interface}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return interface != "lo" and bool(flags & 0x1000)  # IFF_MULTICAST


def test_a_config_keepalived_refuses_replaces_nothing(tmp_path: Path, interface: str) -> None:
    supervisor = KeepalivedSupervisor(settings(interface=interface), data_dir=tmp_path)
    asyncio.run(supervisor.install_files())
    conf, check = (
        (tmp_path / "keepalived.conf").read_text(),
        (tmp_path / "vip-check.sh").read_text(),
    )
    with pytest.raises(VipError, match="refuses"):
        bad = settings(interface="nosuch0", sip_check_port=5070)
        asyncio.run(supervisor.install_files(bad))
    assert (tmp_path / "keepalived.conf").read_text() == conf
    assert (tmp_path / "vip-check.sh").read_text() == check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keepalived.conf", "vip-check.sh"]
