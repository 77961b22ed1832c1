"""MariaDB GTIDs: who is ahead (per domain) and what an old primary has that a new one lacks
(per domain and server, with the promotion's fork point)."""

from __future__ import annotations

import pytest

from smartswitch.cluster.gtid import Gtid, GtidSet, behind, errant, parse_position


def test_parse_and_format() -> None:
    assert parse_position("") == ()
    assert parse_position(None) == ()
    assert parse_position(" 1-3-7, 0-1-105 ") == (Gtid(0, 1, 105), Gtid(1, 3, 7))
    assert str(Gtid(0, 1, 105)) == "0-1-105"
    assert str(GtidSet.of("0-1-105,1-3-7", "0-1-90,0-2-4")) == "0-1-105,0-2-4,1-3-7"
    with pytest.raises(ValueError, match="not a MariaDB GTID"):
        Gtid.parse("0-1")


def test_behind_is_per_domain() -> None:
    assert behind("0-1-103", "0-1-105") == {0: 2}
    assert behind("0-1-105", "0-1-103") == {}
    assert behind("0-1-105", "0-1-105") == {}
    # A domain the other has and I lack altogether.
    assert behind("0-1-105", "0-1-105,1-4-3") == {1: 3}
    # Ahead in one domain, behind in the other: behind there.
    assert behind("0-1-110,1-4-1", "0-1-105,1-4-3") == {1: 2}
    # Another server wrote the later transactions of the domain: still one history.
    assert behind("0-1-105", "0-2-107") == {0: 2}


def test_errant_after_divergence_is_found_per_server() -> None:
    # The old primary (server 1) wrote 104 and 105 that never left it; the new primary
    # (server 2) went on from 103 with 104..106. Per domain, the old one looks "behind".
    old = GtidSet.of("0-1-105")
    new = GtidSet.of("0-1-103,0-2-106")
    assert behind("0-1-105", "0-2-106") == {0: 1}
    found = errant(old, new)
    assert [str(r) for r in found] == ["0-1-104..105"]
    assert found[0].count == 2


def test_no_errant_when_everything_arrived() -> None:
    old = GtidSet.of("0-3-40,0-1-105")  # binlog state: an earlier primary (3), then 1
    new = GtidSet.of("0-3-40,0-1-105,0-2-110")
    assert errant(old, new) == ()
    assert errant(GtidSet.of(""), new) == ()


def test_fork_point_covers_history_a_snapshot_replica_cannot_show() -> None:
    # The new primary was loaded from a snapshot at 0-1-100 (RESET MASTER: no binlog of
    # server 1's history) and promoted at 0-1-103; the old primary wrote up to 105.
    old = GtidSet.of("0-3-40,0-1-105")
    new = GtidSet.of("0-1-103", "0-2-110")
    # Without the fork, server 3's old history looks missing: a snapshot rejoin, safe.
    assert [str(r) for r in errant(old, new)] == ["0-1-104..105", "0-3-1..40"]
    # With it, only what the old primary wrote after the fork is errant.
    assert [str(r) for r in errant(old, new, "0-1-103")] == ["0-1-104..105"]
    assert errant(GtidSet.of("0-1-103"), new, "0-1-103") == ()
    assert [str(r) for r in errant(GtidSet.of("0-1-104"), new, "0-1-103")] == ["0-1-104"]
