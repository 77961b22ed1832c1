"""The node's own rtpengine: started by the node (generated command line), recording calls into
``<data_dir>/recordings``, restarted when it dies (its calls ended, their CDRs saying so).

One node (and so one rtpengine) for the module, on addresses of its own in 127.0.79.0/24: the
node and its rtpengine .1, the caller .2, the supplier .3, callers of accounts that record (.4)
and that do not (.5) through peers that do not. Heavy: run under
``flock /tmp/ss-heavy.lock``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartswitch.media import bencode
from smartswitch.media.archive import find_recording, recording_name

from .conftest import SippFactory
from .node import Node, NodeSpec
from .sipp import Sipp, SippOptions, free_port
from .test_media import SIPP_PCAPS

pytestmark = pytest.mark.e2e

NODE = "127.0.79.1"
CALLER = "127.0.79.2"
CARRIER = "127.0.79.3"
RECORDED = "127.0.79.4"  # a customer whose account records, through a peer that does not
UNRECORDED = "127.0.79.5"  # the same without the account's recording
NG = (NODE, 22779)
DIALLED = "15551234567"
NAME = "media-node"


def ng(command: str, **params: Any) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        cookie = b"n%d" % time.monotonic_ns()
        sock.sendto(cookie + b" " + bencode.encode({"command": command, **params}), NG)
        reply = bencode.decode(sock.recv(65535).partition(b" ")[2])
    assert isinstance(reply, dict)
    return dict(reply)


def sessions() -> list[str]:
    calls = ng("list", limit=100).get("calls", [])
    assert isinstance(calls, list)
    return [str(c) for c in calls]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass  # rtpengine restarting: ask again
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def metrics(node: Node) -> list[str]:
    url = f"http://{node.http_host}:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=2.0) as response:
        text: str = response.read().decode()
    return text.splitlines()


def rtpengine_pid(node: Node) -> int:
    """The node's rtpengine: its child running /usr/bin/rtpengine."""
    children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if cmdline and cmdline[0].endswith(b"rtpengine"):
            return int(child)
    raise AssertionError(f"no rtpengine among the node's children {children}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("media-node")
    carrier_port = free_port(CARRIER)
    spec = NodeSpec(workdir=workdir / "node", sip_host=NODE)
    spec.config = {
        "log_level": "info",
        "node_name": NAME,
        "media_rtpengine": True,
        "media_interface": NODE,
        "media_ng": f"{NG[0]}:{NG[1]}",
        "media_port_min": 31000,
        "media_port_max": 31399,
        "media_ping_interval": 0.5,
    }
    document = {
        "accounts": [
            {"name": "acme", "currency": "USD", "balance": "100.00", "credit_limit": "0"},
            {"name": "carrier", "currency": "USD", "balance": "0"},
            {"name": "taped", "currency": "USD", "balance": "100.00", "record": True},
            {"name": "plain", "currency": "USD", "balance": "100.00"},
        ],
        "tariffs": [{"name": "t", "rates": [{"prefix": "1", "price_per_minute": "0.0100"}]}],
        "peers": [
            {
                "name": "acme-trunk",
                "role": "customer",
                "account": "acme",
                "tariff": "t",
                "acl": [f"{CALLER}/32"],
                "media": "relay",
                "record": True,
            },
            *(
                {
                    "name": f"{account}-trunk",
                    "role": "customer",
                    "account": account,
                    "tariff": "t",
                    "acl": [f"{source}/32"],
                    "media": "relay",
                }
                for account, source in (("taped", RECORDED), ("plain", UNRECORDED))
            ),
            {
                "name": "carrier",
                "role": "supplier",
                "account": "carrier",
                "tariff": "t",
                "address": f"{CARRIER}:{carrier_port}",
            },
        ],
        "routes": [{"prefix": "", "strategy": "priority", "suppliers": ["carrier"]}],
    }
    node = Node(spec)
    node.carrier_port = carrier_port  # type: ignore[attr-defined]
    try:
        node.provision(document)
        node.start()
        yield node
        node.stop_cleanly()
    finally:
        if node.running:
            node.kill()


def carrier(sipp: SippFactory, node: Node) -> Sipp:
    options = SippOptions(
        scenario="uas",
        local_ip=CARRIER,
        local_port=node.carrier_port,  # type: ignore[attr-defined]
        calls=1,
        timeout_s=40,
        recv_timeout_ms=20000,
        extra=("-mi", CARRIER, "-mp", "16200", "-rtp_echo"),
    )
    proc = sipp._new("carrier", "uas", options).start()
    proc.wait_until_listening()
    return proc


def caller(
    sipp: SippFactory, node: Node, scenario: str, duration_ms: int = 0, source: str = CALLER
) -> Sipp:
    options = SippOptions(
        scenario=scenario,
        local_ip=source,
        local_port=free_port(source),
        remote=node.sip_address,
        service=DIALLED,
        calls=1,
        rate=1,
        duration_ms=duration_ms,
        timeout_s=40,
        recv_timeout_ms=20000,
        extra=("-mi", source, "-mp", "18200"),
    )
    proc = sipp._new(None, "uac", options)
    (proc.workdir / "pcap").mkdir(exist_ok=True)
    for pcap in SIPP_PCAPS.glob("*.pcap"):
        (proc.workdir / "pcap" / pcap.name).write_bytes(pcap.read_bytes())
    return proc.start()


def recorded_call(
    sipp: SippFactory, node: Node, source: str = CALLER
) -> tuple[dict[str, Any], Path]:
    """A relayed call with G.711 both ways from ``source``: its CDR and its WAV's path."""
    before = len(node.cdrs())
    callee = carrier(sipp, node)
    result = caller(sipp, node, "uac_pcap_call", source=source).wait()
    assert result.successful == 1, result.describe()
    callee.wait()
    cdr = node.wait_cdrs(before + 1)[-1]
    # Filed in the node's own folder (the file sync's layout, <kind>/<origin>/).
    return cdr, node.data_dir / "recordings" / NAME / f"{recording_name(cdr['call_id'])}.wav"


def test_recorded_call_has_a_wav_as_long_as_the_call(node: Node, sipp: SippFactory) -> None:
    cdr, wav = recorded_call(sipp, node)
    name = wav.stem
    directory = wav.parent
    wait_for("the recording to be filed", wav.exists)
    assert (directory / f"{name}.pcap").stat().st_size > 0
    with wave.open(str(wav)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
        assert reader.getnchannels() == 2 and reader.getframerate() == 8000
    call_seconds = int(cdr["duration_ms"]) / 1000
    assert abs(seconds - call_seconds) <= 0.1 * call_seconds, (seconds, call_seconds)
    # rtpengine's spool is emptied: the recording lives in one place.
    assert not list((node.data_dir / "rtpengine" / "pcaps").glob("*.pcap"))
    assert sessions() == []


def test_rtpengine_killed_calls_ended_cdr_says_so_and_it_comes_back(
    node: Node, sipp: SippFactory
) -> None:
    callee = carrier(sipp, node)
    call = caller(sipp, node, "uac_wait_bye")
    wait_for("the relayed session", lambda: len(sessions()) == 1)
    before = len(node.cdrs())
    old = rtpengine_pid(node)
    os.kill(old, signal.SIGKILL)
    result = call.wait()
    assert result.successful == 1, result.describe()  # the node hung up: BYE
    callee.wait()
    cdr = node.wait_cdrs(before + 1)[-1]
    assert (cdr["hangup_side"], cdr["hangup_reason"]) == ("switch", "media relay lost")
    wait_for("a new rtpengine", lambda: rtpengine_pid(node) != old)
    wait_for("media up again", lambda: "smartswitch_media_up 1" in metrics(node))
    assert "smartswitch_media_restarts_total 1" in metrics(node)
    assert "smartswitch_media_calls_lost_total 1" in metrics(node)
    # And relayed calls go through again.
    callee = carrier(sipp, node)
    again = caller(sipp, node, "uac", duration_ms=300).wait()
    assert again.successful == 1, again.describe()
    wait_for("no session left", lambda: sessions() == [])


def test_an_account_that_records_has_its_relayed_calls_recorded(
    node: Node, sipp: SippFactory
) -> None:
    # Neither customer peer records; only the "taped" account does. The unrecorded call goes
    # first: once the recorded one is filed, the other would have been too.
    plain, _ = recorded_call(sipp, node, UNRECORDED)
    cdr, wav = recorded_call(sipp, node, RECORDED)
    wait_for("the account's recording to be filed", wav.exists)
    for suffix in (".wav", ".pcap"):
        assert find_recording(node.data_dir / "recordings", plain["call_id"], suffix) is None
    with wave.open(str(wav)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
    call_seconds = int(cdr["duration_ms"]) / 1000
    assert abs(seconds - call_seconds) <= 0.1 * call_seconds, (seconds, call_seconds)
    wait_for("no session left", lambda: sessions() == [])
