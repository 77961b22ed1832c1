"""Money across nodes, on a virtual clock: every node grants against the balance less what all
the nodes hold, and a node cut off from some others keeps to its share."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from smartswitch.billing.accounting import Accounting
from smartswitch.billing.reservations import ClusterLedger, Holding, Reservations
from smartswitch.model.config import Account

D = Decimal
ACME = 1
NAMES = ("n1", "n2", "n3")


def _accounting(balance: str = "1.0000", credit: str = "0") -> Accounting:
    accounting = Accounting()
    accounting.load({ACME: Account(ACME, "acme", "USD", D(balance), D(credit))})
    return accounting


class Lab:
    """Three nodes' ledgers joined by a bus the test can cut, on one virtual clock."""

    def __init__(
        self, names: tuple[str, ...] = NAMES, balance: str = "1.0000", credit: str = "0"
    ) -> None:
        self.now = 0.0
        self.names = names
        self.ledgers = {
            n: ClusterLedger(n, _accounting(balance, credit), stale_after=3.0) for n in names
        }
        self.seq = dict.fromkeys(names, 0)
        self.cut: set[frozenset[str]] = set()
        for ledger in self.ledgers.values():
            ledger.expect(names, self.now)

    def links(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def isolate(self, *groups: tuple[str, ...]) -> None:
        """Cut every link between different groups."""
        self.cut = {
            frozenset((a, b)) for g, h in itertools.combinations(groups, 2) for a in g for b in h
        }

    def publish(self, name: str) -> None:
        self.seq[name] += 1
        publication = self.ledgers[name].publication(1000.0, self.seq[name])
        for other, ledger in self.ledgers.items():
            if other != name and self.links(name, other):
                ledger.receive(publication, self.now)

    def beat(self, seconds: float = 1.0) -> None:
        self.now += seconds
        for name in self.names:
            self.publish(name)

    def reserve(self, name: str, amount: str) -> bool:
        """A call on ``name`` reserving ``amount`` if the node may grant it; published at once."""
        ledger = self.ledgers[name]
        if ledger.available(ACME, self.now) < D(amount):
            return False
        ledger.accounting.reserve(ACME, D(amount))
        self.publish(name)
        return True

    def held(self) -> Decimal:
        return sum((ledger.own(ACME).total for ledger in self.ledgers.values()), D(0))


def test_one_node_alone_is_the_node_rule() -> None:
    accounting = _accounting("1.0000", "0.5000")
    ledger = ClusterLedger("n1", accounting)
    ledger.expect(["n1"], 0.0)
    accounting.reserve(ACME, D("0.3000"))
    accounting.charge("cdr1", [(ACME, D("0.2000"))])
    assert ledger.whole(0.0)
    assert ledger.available(ACME, 0.0) == D("1.0000")  # 1.50 - 0.30 - 0.20


def test_other_nodes_holdings_are_subtracted() -> None:
    lab = Lab()
    lab.beat()
    assert lab.reserve("n1", "0.3000")
    lab.ledgers["n2"].accounting.charge("cdr", [(ACME, D("0.2500"))])
    lab.publish("n2")
    for name in NAMES:
        assert lab.ledgers[name].available(ACME, lab.now) == D("0.4500")
    assert lab.ledgers["n3"].holding("n2", ACME) == Holding(D(0), D("0.2500"))


def test_the_balance_is_spent_once_across_the_cluster() -> None:
    lab = Lab()
    lab.beat()
    granted = [name for name in NAMES * 5 if lab.reserve(name, "0.3000")]
    assert granted == ["n1", "n2", "n3"]  # 0.90 held, 0.10 left: not a slice
    assert lab.held() == D("0.9000")


def test_postpaid_credit_limit_follows_the_same_rule() -> None:
    lab = Lab(balance="0", credit="1.0000")
    lab.beat()
    granted = [name for name in NAMES * 5 if lab.reserve(name, "0.3000")]
    assert len(granted) == 3 and lab.held() == D("0.9000")


def test_old_and_out_of_order_publications_are_ignored() -> None:
    ledger = ClusterLedger("n1", _accounting())
    ledger.expect(NAMES[:2], 0.0)
    new = Reservations("n2", 1000.0, 5, {ACME: Holding(D("0.4000"), D(0))})
    old = Reservations("n2", 1000.0, 4, {ACME: Holding(D("0.1000"), D(0))})
    earlier_process = Reservations("n2", 999.0, 50, {})
    assert ledger.receive(new, 1.0)
    assert not ledger.receive(old, 1.1)
    assert not ledger.receive(new, 1.2)  # the same one twice
    assert not ledger.receive(earlier_process, 1.3)
    assert ledger.available(ACME, 1.3) == D("0.6000")
    restarted = Reservations("n2", 2000.0, 1, {})  # a restart: its calls are gone
    assert ledger.receive(restarted, 1.4)
    assert ledger.available(ACME, 1.4) == D("1.0000")


def test_own_publication_is_ignored_and_an_unknown_node_is_learnt() -> None:
    ledger = ClusterLedger("n1", _accounting())
    ledger.expect(["n1"], 0.0)
    assert not ledger.receive(Reservations("n1", 1.0, 1, {ACME: Holding(D(1), D(0))}), 0.0)
    assert ledger.receive(Reservations("n9", 1.0, 1, {ACME: Holding(D("0.2"), D(0))}), 0.0)
    assert ledger.members() == ["n1", "n9"]
    assert ledger.available(ACME, 0.0) == D("0.8000")


def test_json_round_trip_and_bad_messages() -> None:
    publication = Reservations("n2", 12.5, 3, {ACME: Holding(D("0.3000"), D("0.0100"))})
    assert Reservations.from_json(publication.to_json()) == publication
    changed = Reservations("n2", 12.5, 4, {}, changed_at=1_780_000_000.25)
    assert Reservations.from_json(changed.to_json()) == changed
    good = publication.to_json()
    bad: list[object] = [
        None,
        [],
        {**good, "v": 2},
        {**good, "node": ""},
        {**good, "epoch": "x"},
        {**good, "epoch": True},
        {**good, "seq": -1},
        {**good, "seq": 1.5},
        {**good, "accounts": []},
        {**good, "accounts": {"x": ["1", "0"]}},
        {**good, "accounts": {"1": ["1"]}},
        {**good, "accounts": {"1": [1, "0"]}},
        {**good, "accounts": {"1": ["abc", "0"]}},
        {**good, "accounts": {"1": ["NaN", "0"]}},
        {**good, "accounts": {"1": ["Infinity", "0"]}},
        {**good, "changed_at": "soon"},
    ]
    for data in bad:
        with pytest.raises(ValueError):
            Reservations.from_json(data)


def test_a_node_at_start_keeps_to_its_share_until_it_hears_the_others() -> None:
    ledger = ClusterLedger("n1", _accounting())
    ledger.expect(NAMES, 0.0)
    assert not ledger.whole(0.0)
    assert ledger.available(ACME, 0.0) == D("0.3333")  # 1/3 of 1.00, rounded down
    for name in ("n2", "n3"):
        ledger.receive(Reservations(name, 1.0, 1, {}), 0.5)
    assert ledger.whole(0.5)
    assert ledger.available(ACME, 0.5) == D("1.0000")


def test_a_silent_node_turns_missing_after_stale_after() -> None:
    lab = Lab()
    lab.beat()
    ledger = lab.ledgers["n1"]
    lab.isolate(("n1", "n2"), ("n3",))
    lab.beat(2.0)
    assert ledger.whole(lab.now)  # 2 s since n3 was last heard: not yet missing
    assert ledger.next_deadline() == pytest.approx(4.0)
    lab.beat(1.5)
    assert not ledger.whole(lab.now)
    assert ledger.live(lab.now) == {"n1", "n2"}


def _spend_greedily(lab: Lab, slice_: str, rounds: int = 20) -> None:
    for _ in range(rounds):
        for name in lab.names:
            lab.reserve(name, slice_)


@pytest.mark.parametrize(
    "groups",
    [
        (("n1", "n2"), ("n3",)),
        (("n1",), ("n2", "n3")),
        (("n1",), ("n2",), ("n3",)),
    ],
)
@pytest.mark.parametrize("slice_", ["0.0100", "0.0700", "0.3000"])
@pytest.mark.parametrize("held_before", ["0", "0.2000", "0.9000"])
def test_a_partition_seen_by_all_sides_never_overspends(
    groups: tuple[tuple[str, ...], ...], slice_: str, held_before: str
) -> None:
    lab = Lab()
    lab.beat()
    if D(held_before):
        assert lab.reserve("n2", held_before)
    available_at_cut = lab.ledgers["n1"].available(ACME, lab.now)
    lab.isolate(*groups)
    lab.beat(3.5)  # every side notices before anyone grants again
    for ledger in lab.ledgers.values():
        assert not ledger.whole(lab.now)
    _spend_greedily(lab, slice_)
    taken = lab.held() - D(held_before)
    assert taken <= available_at_cut
    # Each group took at most its equal share of what was left.
    for group in groups:
        group_taken = sum((lab.ledgers[n].own(ACME).total for n in group), D(0))
        if "n2" in group:
            group_taken -= D(held_before)
        assert group_taken <= available_at_cut * len(group) / 3


def test_charges_confirmed_during_a_partition_do_not_give_money_back() -> None:
    lab = Lab()
    lab.beat()
    lab.isolate(("n1", "n2"), ("n3",))
    lab.beat(3.5)
    n1 = lab.ledgers["n1"]
    assert n1.available(ACME, lab.now) == D("0.6666")
    assert lab.reserve("n1", "0.6000")
    # The call ends: 0.60 charged, then replicated (the stored balance drops, the charge is
    # confirmed): the group has still used 0.60 of its 0.6666.
    accounting = n1.accounting
    accounting.release(ACME, D("0.6000"))
    accounting.charge("cdr1", [(ACME, D("0.6000"))])
    accounting.confirm({ACME: D("0.4000")}, ["cdr1"])
    lab.publish("n1")
    assert n1.available(ACME, lab.now) == D("0.0666")
    # Meanwhile n3 alone keeps to its third.
    assert lab.ledgers["n3"].available(ACME, lab.now) == D("0.3333")


def test_shares_go_back_to_normal_when_the_partition_heals() -> None:
    lab = Lab()
    lab.beat()
    lab.isolate(("n1", "n2"), ("n3",))
    lab.beat(3.5)
    assert lab.reserve("n3", "0.3000")
    assert not lab.reserve("n3", "0.1000")  # its third is used up
    assert lab.reserve("n1", "0.5000")
    lab.isolate(("n1", "n2", "n3"))
    lab.beat()
    for ledger in lab.ledgers.values():
        assert ledger.whole(lab.now)
        assert ledger.available(ACME, lab.now) == D("0.2000")  # 1.00 - 0.30 - 0.50


def test_a_group_that_shrinks_again_splits_what_it_had_left() -> None:
    lab = Lab()
    lab.beat()
    lab.isolate(("n1", "n2"), ("n3",))
    lab.beat(3.5)
    assert lab.ledgers["n1"].available(ACME, lab.now) == D("0.6666")
    assert lab.reserve("n2", "0.2000")
    lab.isolate(("n1",), ("n2",), ("n3",))
    lab.beat(3.5)
    # The group had 0.4666 left; n1 alone gets half of it.
    assert lab.ledgers["n1"].available(ACME, lab.now) == D("0.2333")
    assert lab.ledgers["n2"].available(ACME, lab.now) == D("0.2333")


def test_the_share_setting_overrides_equal_shares() -> None:
    accounting = _accounting()
    ledger = ClusterLedger("n1", accounting, money_share=0.5)
    ledger.expect(NAMES, 0.0)
    assert ledger.available(ACME, 0.0) == D("0.5000")
    with pytest.raises(ValueError):
        ClusterLedger("n1", accounting, money_share=1.5)
    with pytest.raises(ValueError):
        ClusterLedger("n1", accounting, stale_after=0)


def test_late_notice_is_the_documented_window() -> None:
    """Before the cut is noticed both sides grant against the whole balance: the overspend the
    module documents as the detection window's."""
    lab = Lab()
    lab.beat()
    lab.isolate(("n1", "n2"), ("n3",))
    assert lab.reserve("n1", "0.6000")  # n3 has not heard of it
    assert lab.reserve("n3", "0.6000")  # nor n1 of this: both still think the cluster whole
    assert lab.held() == D("1.2000")
    lab.beat(3.5)
    # Once noticed, each side keeps to its share of what it saw left (0.40 each): the
    # overspend stays what was granted unseen in the window.
    _spend_greedily(lab, "0.0100", rounds=100)
    assert lab.held() - D("1.0000") <= D("0.6000")


def test_by_node_lists_each_nodes_holding() -> None:
    lab = Lab()
    lab.beat()
    assert lab.reserve("n2", "0.2000")
    rows = lab.ledgers["n1"].by_node(ACME, lab.now)
    assert [(r.node, r.holding.reserved, r.live, r.own) for r in rows] == [
        ("n1", D(0), True, True),
        ("n2", D("0.2000"), True, False),
        ("n3", D(0), True, False),
    ]


def test_a_node_removed_from_the_table_is_forgotten() -> None:
    lab = Lab()
    lab.beat()
    assert lab.reserve("n3", "0.5000")
    ledger = lab.ledgers["n1"]
    ledger.expect(["n1", "n2"], lab.now)
    assert ledger.available(ACME, lab.now) == D("1.0000")


def test_accounting_tells_of_each_change() -> None:
    accounting = _accounting()
    changes: list[int] = []
    accounting.on_change = lambda: changes.append(1)
    accounting.reserve(ACME, D(1))
    accounting.release(ACME, D(1))
    accounting.charge("c", [(ACME, D(1))])
    accounting.confirm({ACME: D(0)}, ["c"])
    accounting.confirm({ACME: D(0)}, [])  # nothing of ours changed: no news
    assert len(changes) == 4
