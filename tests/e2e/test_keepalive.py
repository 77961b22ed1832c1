"""A call whose legs stop answering is torn down, not left to live for ever.

With ``dialog_ping_interval`` the switch sends in-dialog OPTIONS to both legs of every
answered call; a leg that no longer answers (its OPTIONS goes ``dialog_ping_timeout`` without
an answer, or is answered 481) ends the call, with a BYE to the leg still there.
"""

from __future__ import annotations

import time

import pytest

from .conftest import SippFactory, StartNode
from .node import route

pytestmark = pytest.mark.e2e


def test_call_torn_down_when_the_callee_stops_answering(
    start_node: StartNode, sipp: SippFactory
) -> None:
    uas = sipp.uas("uas_answer", calls=None)
    node = start_node(
        route("1", sipp.uri(uas)),
        dialog_ping_interval=1,
        dialog_ping_timeout=3,
        max_call_duration=300,
    )
    caller = sipp.uac_background(
        node.sip_address, "uac_wait_bye", recv_timeout_ms=60_000, timeout_s=90
    )
    deadline = time.monotonic() + 10
    while node.health()["calls"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.health()["call_states"] == {"connected": 1}
    uas.stop()  # the callee vanishes: no BYE, no answer to anything
    gone = time.monotonic()

    result = caller.wait(timeout=60)

    took = time.monotonic() - gone
    assert result.failed == 0 and result.successful == 1, result.describe()
    assert result.received_requests("BYE"), "the caller was not told the call ended"
    # The first unanswered ping goes at most 1 s after the callee vanished, and 3 s later the
    # call ends: well before Timer F (32 s) would have ended that OPTIONS.
    assert 3 <= took < 20, f"the call lived {took:.0f} s after its callee vanished"
    assert node.health()["calls"] == 0
    assert "leg not responding" in node.log_text()
