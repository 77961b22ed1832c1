"""``smartswitch drain`` end to end: a billing node carrying calls (sipp), drained by the
command an operator runs on its host.

While it drains, new calls are refused with 503 and a Retry-After (checked by a sipp
scenario), the calls in progress complete normally (their BYEs answered, sipp counts them
successful), every one of them has its CDR, the money audit is exact, and the node exits 0 by
itself once drained.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CALLEE2_IP, CALLEE_IP, SippFactory
from .node import Node, NodeSpec, node_command
from .sipp import SCENARIOS, completed_call_ids
from .test_billing import example

pytestmark = pytest.mark.e2e

LONG_CALLS = 6
CALL_MS = 5000


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A billing node the test starts itself: it is expected to stop on its own."""
    spec = NodeSpec(workdir=tmp_path / "node", sip_host="127.0.0.1")
    spec.config = {"log_level": "info"}
    made = Node(spec)
    yield made
    made.stop()


def _wait_connected(node: Node, calls: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.health()["call_states"].get("connected", 0) >= calls:
            return
        time.sleep(0.05)
    raise AssertionError(f"{calls} calls not up within {timeout} s: {node.health()}")


def test_drain_refuses_new_calls_lets_these_end_and_exits_0(
    node: Node, sipp: SippFactory, tmp_path: Path
) -> None:
    carrier_a = sipp.uas("uas_answer", ip=CALLEE_IP, calls=None)
    carrier_b = sipp.uas("uas_answer", ip=CALLEE2_IP, calls=None)
    node.provision(example(carrier_a, carrier_b))
    node.start()

    talking = sipp.uac_background(
        node.sip_address, "uac", calls=LONG_CALLS, rate=20, duration_ms=CALL_MS, timeout_s=60
    )
    _wait_connected(node, LONG_CALLS)

    drain = subprocess.Popen(
        [
            *node_command(),
            "drain",
            "--config",
            str(node.config_path),
            "--data-dir",
            str(node.data_dir),
            "--url",
            f"http://{node.http_host}:{node.http_port}",
            "--deadline",
            "60",
            "--retry-after",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The command says so once the node took the drain: from then on a new caller gets
        # 503 with a Retry-After.
        assert drain.stdout is not None
        first = drain.stdout.readline()
        assert first.startswith("draining "), first
        refused = sipp.uac(
            node.sip_address,
            SCENARIOS / "uac_expect_503_retry_after.xml",
            ip="127.0.0.2",
            calls=3,
            rate=10,
            name="refused",
        )
        rest, _ = drain.communicate(timeout=90)
        output = first + rest
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()
    assert (refused.successful, refused.failed) == (3, 0), refused.describe()
    retry_after = [m.header("retry-after") for m in refused.received_responses(503)]
    assert retry_after and all(value == "30" for value in retry_after), retry_after

    # The calls in progress ended normally, after the drain had started.
    result = talking.wait(60)
    assert (result.successful, result.failed) == (LONG_CALLS, 0), result.describe()
    assert drain.returncode == 0, output
    assert "drained: every CDR delivered" in output, output

    # The node stopped by itself, cleanly.
    deadline = time.monotonic() + 15
    while node.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not node.running, node.log_tail()
    assert node.stop() == 0, node.log_tail()

    # Every completed call has exactly one CDR; the money is exact.
    finished = completed_call_ids(result.received)
    cdrs = node.cdrs()
    assert sorted(c["call_id"] for c in cdrs) == sorted(finished)
    assert len(cdrs) == LONG_CALLS
    audit = node.audit()
    assert audit.returncode == 0 and "audit: exact" in audit.stdout, audit.stdout
    del tmp_path
