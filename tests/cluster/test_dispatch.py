"""The dispatcher's decisions on a virtual clock: shares by free capacity, a dead node's share
spread evenly, probes, attached nodes, tokens and the trusted source header."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from smartswitch.cluster.dispatch import (
    Chooser,
    NoNode,
    SourceTrust,
    TokenError,
    Tokens,
)
from smartswitch.cluster.membership import Heartbeat

from .busnet import sample_heartbeat

NAMES = ("node1", "node2", "node3")


def beats(seq: int = 1, calls: int = 0, capacity: int = 1000, **per: Any) -> list[Heartbeat]:
    return [
        sample_heartbeat(
            name,
            seq=seq,
            calls=per.get(name, calls),
            capacity=capacity,
            sip_address=f"127.0.0.{11 + i}:5060",
        )
        for i, name in enumerate(NAMES)
    ]


def run(chooser: Chooser, count: int, now: float = 0.0, **kwargs: Any) -> Counter[str]:
    return Counter(chooser.choose(now, **kwargs).node for _ in range(count))


def test_equal_nodes_share_exactly_evenly() -> None:
    chooser = Chooser()
    chooser.update(beats())
    shares = run(chooser, 3000)
    assert shares == {"node1": 1000, "node2": 1000, "node3": 1000}
    assert chooser.chosen == dict(shares)


def test_shares_follow_free_capacity() -> None:
    chooser = Chooser()
    # node1 is half full: half the free capacity of the others, half their share.
    chooser.update(beats(capacity=1000, node1=500))
    shares = run(chooser, 250)
    assert shares["node1"] == pytest.approx(50, abs=2)
    assert shares["node2"] == pytest.approx(100, abs=2)
    assert shares["node3"] == pytest.approx(100, abs=2)


def test_calls_sent_since_a_heartbeat_count_against_the_node_until_the_next() -> None:
    chooser = Chooser()
    chooser.update(beats(capacity=10))
    assert run(chooser, 30) == {"node1": 10, "node2": 10, "node3": 10}
    with pytest.raises(NoNode):
        chooser.choose(0.0)
    # The same heartbeat again changes nothing; a new one (the calls ended) frees them.
    chooser.update(beats(capacity=10))
    with pytest.raises(NoNode):
        chooser.choose(0.0)
    chooser.update(beats(seq=2, capacity=10))
    assert chooser.free("node1") == 10


def test_a_dead_nodes_share_spreads_evenly_over_all_the_others() -> None:
    names = [f"n{i}" for i in range(6)]
    chooser = Chooser()
    hb = [sample_heartbeat(n, calls=0, capacity=1000) for n in names]
    chooser.update(hb)
    run(chooser, 600)
    # n2 dies: the membership no longer lists it.
    chooser.update([h for h in hb if h.node != "n2"])
    shares = run(chooser, 500)
    assert "n2" not in shares
    # Every survivor took a fifth, not one neighbour the dead node's share.
    assert sorted(shares.values()) == [100] * 5


def test_a_node_that_is_full_or_has_no_capacity_or_is_not_alive_gets_nothing() -> None:
    chooser = Chooser()
    hb = beats(capacity=1000, node2=1000)
    hb[2] = sample_heartbeat("node3", capacity=0, calls=0)
    chooser.update([*hb, sample_heartbeat("node4", alive=False, calls=0)])
    assert run(chooser, 10) == {"node1": 10}


def test_an_unanswered_probe_takes_a_node_out_before_its_heartbeats_are_missed() -> None:
    chooser = Chooser(probe_interval=0.5, probe_dead=1.5)
    chooser.update(beats())
    for name in NAMES:
        chooser.probe_sent(name, 0.0)
        chooser.probe_answered(name, 0.01)
    # node3 stops answering at t=0.5.
    t = 0.5
    while t < 3.0:
        for name in NAMES:
            chooser.probe_sent(name, t)
            if name != "node3":
                chooser.probe_answered(name, t + 0.01)
        t += 0.5
        if t >= 2.0:
            assert set(run(chooser, 10, now=t)) == {"node1", "node2"}
        elif t < 1.9:
            assert "node3" in run(chooser, 3, now=t)
    # It answers again: back at once.
    chooser.probe_answered("node3", 3.1)
    assert "node3" in run(chooser, 3, now=3.1)


def test_a_customer_attached_to_nodes_is_dispatched_among_those_only() -> None:
    chooser = Chooser()
    chooser.update(beats())
    shares = run(chooser, 100, allowed={"node1", "node3"})
    assert shares == {"node1": 50, "node3": 50}
    with pytest.raises(NoNode):
        chooser.choose(0.0, allowed={"node9"})


def test_no_node_up_is_no_node() -> None:
    chooser = Chooser()
    with pytest.raises(NoNode) as caught:
        chooser.choose(0.0)
    assert caught.value.status == 503


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_admits_its_call_to_its_node_until_it_expires() -> None:
    tokens = Tokens("secret", lifetime=30)
    token = tokens.make("node2", "call-1@x", now=1000.0)
    tokens.check(token, "node2", "call-1@x", now=1029.0)
    with pytest.raises(TokenError, match="expired"):
        tokens.check(token, "node2", "call-1@x", now=1031.0)
    with pytest.raises(TokenError, match="another node"):
        tokens.check(token, "node3", "call-1@x", now=1001.0)
    with pytest.raises(TokenError, match="forged"):
        tokens.check(token, "node2", "call-2@x", now=1001.0)
    with pytest.raises(TokenError, match="forged"):
        Tokens("other secret").check(token, "node2", "call-1@x", now=1001.0)


@pytest.mark.parametrize("token", [None, "", "x", "1.2", "abc.bm9kZTI.x", "10.!!!.x", "1.2.3.4"])
def test_a_bad_token_is_refused_not_crashed_on(token: str | None) -> None:
    with pytest.raises(TokenError) as caught:
        Tokens("secret").check(token, "node2", "c", now=0.0)
    assert caught.value.status == 403


def test_a_forged_expiry_is_a_forgery() -> None:
    tokens = Tokens("secret", lifetime=30)
    token = tokens.make("node2", "c", now=1000.0)
    later = "9999999999" + token[token.index(".") :]
    with pytest.raises(TokenError, match="forged"):
        tokens.check(later, "node2", "c", now=2000.0)


def test_tokens_keep_the_secret_out_of_their_repr() -> None:
    assert "secret" not in repr(Tokens("secret"))


# --- the source header ------------------------------------------------------------------------


def test_the_source_header_is_believed_only_from_a_member() -> None:
    trust = SourceTrust({"node1": "127.0.0.11", "node2": "127.0.0.12"})
    assert trust.real_source("127.0.0.5:5070", ("127.0.0.11", 5060)) == ("127.0.0.5", 5070)
    assert trust.real_source("127.0.0.5:5070", ("127.0.0.99", 5060)) is None
    assert trust.real_source(None, ("127.0.0.11", 5060)) is None
    assert trust.real_source("[::1]:5070", ("127.0.0.12", 5060)) == ("::1", 5070)


@pytest.mark.parametrize("header", ["", "127.0.0.5", "127.0.0.5:0", "127.0.0.5:x", ":5060"])
def test_a_malformed_source_header_is_ignored(header: str) -> None:
    trust = SourceTrust({"node1": "127.0.0.11"})
    assert trust.real_source(header, ("127.0.0.11", 5060)) is None
