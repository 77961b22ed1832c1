"""The rules of automatic promotion that need no etcd: anti-flap, no automatic promotion with
fewer than three etcd members, and a lease holder fencing itself in time (against a stand-in
for etcd whose renewals can be made to hang; the real etcd runs in test_consensus.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from smartswitch.cluster.consensus import (
    ConsensusError,
    EtcdClient,
    EtcdUnavailable,
    FailoverSettings,
    KeyValue,
    LeaderLease,
    LeaseExpired,
    PromotionMark,
    TxnResult,
    automatic_promotion_refusal,
)


def test_no_automatic_promotion_with_fewer_than_three_members() -> None:
    for members in ((), ("e1",), ("e1", "e2")):
        with pytest.raises(ConsensusError, match="at least 3 etcd members"):
            FailoverSettings(members, automatic=True)
        FailoverSettings(members)  # manual promotion only: fine
    assert FailoverSettings(("e1", "e2", "e3"), automatic=True).automatic


def test_the_anti_flap_rule() -> None:
    hour = 3600.0
    assert automatic_promotion_refusal(None, 1000.0, hour) is None
    auto = PromotionMark(1000.0, True, "n2")
    assert "anti-flap" in (automatic_promotion_refusal(auto, 1000.0 + 59 * 60, hour) or "")
    assert automatic_promotion_refusal(auto, 1000.0 + hour, hour) is None
    assert automatic_promotion_refusal(PromotionMark(1000.0, False, "n2"), 1001.0, hour) is None
    # For a while after an operator's promotion, only the node promoted takes the key: the
    # others would see the key free before its lease round and promote themselves over it.
    by_hand = PromotionMark(1000.0, False, "n2")
    waiting = automatic_promotion_refusal(by_hand, 1001.0, hour, handover=30.0)
    assert waiting is not None and "n2 was promoted by hand" in waiting
    assert automatic_promotion_refusal(by_hand, 1030.0, hour, handover=30.0) is None
    assert PromotionMark.from_json(auto.to_json()) == auto


class FakeEtcd:
    """Just enough of :class:`EtcdClient` for a lease holder: renewals that work, hang
    (``cut``) or find the lease gone (``expired``), and a leader key that may change hands."""

    def __init__(self) -> None:
        self.cut = False
        self.expired = False
        self.holder_lease = 7

    async def grant(self, ttl: int) -> int:
        return 7

    async def txn(self, *args: Any, **kwargs: Any) -> TxnResult:
        return TxnResult(True, 42, ())

    async def keepalive(self, lease: int, *, timeout: float | None = None) -> int:
        if self.cut:
            await asyncio.sleep(timeout or 1.0)
            raise EtcdUnavailable("cut off")
        if self.expired:
            raise LeaseExpired("lease 7 is gone")
        return 2

    async def get(self, key: str, *, timeout: float | None = None) -> KeyValue:
        return KeyValue(key, b"n1", 42, 42, 1, self.holder_lease)

    async def revoke(self, lease: int) -> None:
        pass


def hold(change: Callable[[FakeEtcd], None]) -> tuple[LeaderLease, list[float], float]:
    """Hold a 2 s lease, let it renew, apply ``change``; returns the lease, when on_lost ran
    (monotonic) and when the change was made."""

    async def main() -> tuple[LeaderLease, list[float], float]:
        etcd = FakeEtcd()
        lost: list[float] = []
        lease = LeaderLease(
            cast(EtcdClient, etcd),
            "n1",
            ttl=2,
            on_lost=lambda reason: lost.append(time.monotonic()),
        )
        assert (await lease.acquire()).epoch == 42
        while lease.renewals < 1:
            await asyncio.sleep(0.01)
        changed = time.monotonic()
        change(etcd)
        await asyncio.wait_for(lease.lost.wait(), 5)
        await asyncio.sleep(0.3)  # on_lost runs once, and renewing stopped
        return lease, lost, changed

    return asyncio.run(main())


def test_a_holder_that_cannot_renew_fences_itself_within_half_the_ttl() -> None:
    lease, lost, cut = hold(lambda etcd: setattr(etcd, "cut", True))
    assert len(lost) == 1 and "no renewal" in lease.lost_reason
    assert lease.last_renewed is not None
    # At most ttl/2 after the last renewal that was granted (plus scheduling slack), never
    # as late as the ttl, when the lease could expire in etcd.
    assert lost[0] - lease.last_renewed <= 1.0 + 0.25
    assert lost[0] - cut < 2.0
    assert not lease.held


def test_a_lease_gone_or_a_key_taken_is_a_loss_at_once() -> None:
    lease, lost, changed = hold(lambda etcd: setattr(etcd, "expired", True))
    assert len(lost) == 1 and "gone" in lease.lost_reason
    assert lost[0] - changed < 0.9
    lease, lost, changed = hold(lambda etcd: setattr(etcd, "holder_lease", 99))
    assert len(lost) == 1 and "no longer ours" in lease.lost_reason
