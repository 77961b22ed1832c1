"""The rules of automatic promotion that need no etcd: anti-flap, and no automatic promotion
with fewer than three etcd members."""

from __future__ import annotations

import pytest

from smartswitch.cluster.consensus import (
    ConsensusError,
    FailoverSettings,
    PromotionMark,
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
    assert PromotionMark.from_json(auto.to_json()) == auto
