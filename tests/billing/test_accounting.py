"""Live balances: available = stored + credit - reserved - unconfirmed, each charge counted
exactly once whichever way the database and the node's own records cross."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from smartswitch.billing.accounting import Accounting
from smartswitch.model.config import Account

ACME, CARRIER = 1, 2
D = Decimal


def accounts(acme: str = "100", credit: str = "0", carrier: str = "0") -> dict[int, Account]:
    return {
        ACME: Account(ACME, "acme", "USD", D(acme), D(credit)),
        CARRIER: Account(CARRIER, "carrier", "USD", D(carrier), D(0)),
    }


def loaded(**kwargs: str) -> Accounting:
    accounting = Accounting()
    accounting.load(accounts(**kwargs))
    return accounting


def test_available_is_balance_plus_credit() -> None:
    accounting = loaded(acme="10.5000", credit="2.2500")
    assert accounting.available(ACME) == D("12.7500")
    assert accounting.balance(ACME) == D("10.5000")


def test_unknown_accounts_have_nothing() -> None:
    accounting = Accounting()
    assert accounting.available(99) == 0
    assert accounting.balance(99) == 0


def test_a_reservation_holds_money_until_released() -> None:
    accounting = loaded(acme="1")
    accounting.reserve(ACME, D("0.3000"))
    accounting.reserve(ACME, D("0.2000"))
    assert accounting.available(ACME) == D("0.5000")
    assert accounting.balance(ACME) == D(1), "a reservation is not a charge"
    accounting.release(ACME, D("0.3000"))
    accounting.release(ACME, D("0.2000"))
    assert accounting.available(ACME) == D(1)


def test_a_charge_counts_until_the_database_shows_it() -> None:
    accounting = loaded(acme="1", carrier="0")
    accounting.charge("cdr-1", [(ACME, D("0.0100")), (CARRIER, D("0.0040"))])
    assert accounting.balance(ACME) == D("0.9900")
    assert accounting.balance(CARRIER) == D("-0.0040")
    assert accounting.available(ACME) == D("0.9900")
    # A refresh from before the CDR arrived: nothing changes.
    accounting.confirm({ACME: D(1), CARRIER: D(0)}, [])
    assert accounting.balance(ACME) == D("0.9900")
    # The CDR is in the database, its money in the balances read with it: counted once.
    accounting.confirm({ACME: D("0.9900"), CARRIER: D("-0.0040")}, ["cdr-1"])
    assert accounting.balance(ACME) == D("0.9900")
    assert accounting.balance(CARRIER) == D("-0.0040")
    assert accounting.pending == {}
    # Seeing it again in a later refresh takes nothing away a second time.
    accounting.confirm({ACME: D("0.9900"), CARRIER: D("-0.0040")}, ["cdr-1"])
    assert accounting.balance(ACME) == D("0.9900")


def test_zero_charges_are_not_pending() -> None:
    accounting = loaded()
    accounting.charge("unanswered", [(ACME, D("0.0000")), (CARRIER, D(0))])
    accounting.charge("customer-only", [(ACME, D("0.0100")), (CARRIER, D(0))])
    assert set(accounting.pending) == {"customer-only"}
    assert accounting.pending["customer-only"] == ((ACME, D("0.0100")),)


def test_the_same_record_charged_twice_counts_once() -> None:
    """A record id is a call: charged again (an outbox record seen at start and once more)
    it must not be taken twice, or the balance is short for ever after its confirmation."""
    accounting = loaded(acme="1")
    accounting.charge("cdr-1", [(ACME, D("0.0100"))])
    accounting.charge("cdr-1", [(ACME, D("0.0100"))])
    assert accounting.balance(ACME) == D("0.9900")
    accounting.confirm({ACME: D("0.9900")}, ["cdr-1"])
    assert accounting.balance(ACME) == D("0.9900")
    assert accounting.unconfirmed[ACME] == 0


def test_a_top_up_shows_at_the_next_refresh_with_calls_still_unconfirmed() -> None:
    accounting = loaded(acme="1")
    accounting.charge("cdr-1", [(ACME, D("0.2500"))])
    accounting.confirm({ACME: D("11")}, [])  # +10 topped up; cdr-1 not in the database yet
    assert accounting.balance(ACME) == D("10.7500")
    accounting.confirm({ACME: D("10.7500")}, ["cdr-1"])
    assert accounting.balance(ACME) == D("10.7500")


def test_load_limits_changes_credit_but_not_known_balances() -> None:
    accounting = loaded(acme="5", credit="1")
    accounting.charge("cdr-1", [(ACME, D("1"))])
    new = accounts(acme="999", credit="3")  # a config snapshot: its balance is stale
    new[7] = Account(7, "new", "USD", D("2.5000"), D(0))
    accounting.load_limits(new)
    assert accounting.credit[ACME] == D(3)
    assert accounting.balance(ACME) == D(4)
    assert accounting.available(ACME) == D(7)
    assert accounting.balance(7) == D("2.5000"), "a new account starts from its balance"


def test_money_is_exact() -> None:
    accounting = loaded(acme="0.3")
    for n in range(3):
        accounting.charge(f"cdr-{n}", [(ACME, D("0.1"))])
    assert accounting.balance(ACME) == 0
    assert str(accounting.available(ACME)) in ("0.0", "0")


_amount = st.decimals(min_value=D("0.0001"), max_value=D("5"), places=4)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["call", "deliver", "refresh", "refresh_racing"]), _amount),
        max_size=60,
    )
)
def test_every_charge_counted_exactly_once(steps: list[tuple[str, Decimal]]) -> None:
    """A model of the node and its database: calls end and are charged, the forwarder
    delivers the oldest records (the database balance moves), refreshes read the balances
    together with the pending ids the database holds. After every step but one the node's
    balance is the true one: opening - every charge so far.

    The exception, "refresh_racing", is BillingServices.refresh_balances overtaken: it lists
    the pending ids, and while it reads the database, calls end and the forwarder delivers
    them. Their money is then in the balance read but their ids were not asked about, so
    they count twice until the next refresh: the node may see less money, never more, and
    the next refresh makes it exact again."""
    accounting = loaded(acme="100")
    opening = D(100)
    charged: list[tuple[str, Decimal]] = []
    delivered: list[tuple[str, Decimal]] = []

    overtaken = False  # until the next full refresh

    def db() -> tuple[Decimal, set[str]]:
        return opening - sum((a for _, a in delivered), D(0)), {i for i, _ in delivered}

    for n, (action, amount) in enumerate(steps):
        expected = opening - sum((a for _, a in charged), D(0))
        if action == "call":
            accounting.reserve(ACME, amount)
            accounting.release(ACME, amount)
            accounting.charge(f"cdr-{n}", [(ACME, amount)])
            charged.append((f"cdr-{n}", amount))
            expected -= amount
        elif action == "deliver" and len(delivered) < len(charged):
            delivered.append(charged[len(delivered)])
        elif action == "refresh":
            balance, ids = db()
            accounting.confirm({ACME: balance}, [i for i in accounting.pending if i in ids])
            overtaken = False
        elif action == "refresh_racing":
            asked = list(accounting.pending)
            accounting.charge(f"cdr-{n}", [(ACME, amount)])  # a call ends meanwhile ...
            charged.append((f"cdr-{n}", amount))
            expected -= amount
            delivered[:] = charged  # ... and everything is delivered before the read
            balance, ids = db()
            accounting.confirm({ACME: balance}, [i for i in asked if i in ids])
            overtaken = True
        if overtaken:
            assert accounting.balance(ACME) <= expected, action
        else:
            assert accounting.balance(ACME) == expected, action
        assert accounting.reserved.get(ACME, D(0)) == 0
