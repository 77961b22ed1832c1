"""Accounts: CRUD through the provisioning writer, balances with an audit trail."""

from __future__ import annotations

from decimal import Decimal

from .conftest import WebEnv


def fields(response: object) -> list[str]:
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    return [".".join(str(p) for p in d["loc"][1:]) for d in detail]


def test_create_read_update_delete(web: WebEnv) -> None:
    created = web.post(
        "/api/v1/accounts",
        {
            "name": "acme",
            "currency": "EUR",
            "balance": "12.3456",
            "credit_limit": "5",
            "prepaid": False,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "acme",
        "currency": "EUR",
        "balance": "12.3456",
        "live_balance": None,
        "available": None,
        "credit_limit": "5.0000",
        "prepaid": False,
        "reserve_seconds": None,
        "record": False,
        "held_by_node": [],
    }
    assert web.get("/api/v1/accounts/acme").json()["balance"] == "12.3456"
    assert [a["name"] for a in web.get("/api/v1/accounts").json()] == ["acme"]

    updated = web.put("/api/v1/accounts/acme", {"currency": "EUR", "credit_limit": "7.5"})
    assert updated.status_code == 200
    assert updated.json()["changed"] is True and updated.json()["credit_limit"] == "7.5000"
    again = web.put("/api/v1/accounts/acme", {"currency": "EUR", "credit_limit": "7.5"})
    assert again.json()["changed"] is False  # idempotent, like provisioning

    # The opening balance is history: the account is kept.
    assert web.delete("/api/v1/accounts/acme").status_code == 409
    web.post("/api/v1/accounts", {"name": "empty", "currency": "EUR"})
    assert web.delete("/api/v1/accounts/empty").status_code == 204
    assert web.get("/api/v1/accounts/empty").status_code == 404


def test_create_twice_is_409(web: WebEnv) -> None:
    assert web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}).status_code == 201
    response = web.post("/api/v1/accounts", {"name": "a", "currency": "USD"})
    assert response.status_code == 409 and "exists" in response.json()["detail"]


def test_validation_names_every_bad_field(web: WebEnv) -> None:
    response = web.post(
        "/api/v1/accounts",
        {"name": "bad name!", "currency": "usd", "balance": "1.23456", "credit_limit": "-1"},
    )
    assert response.status_code == 422
    assert sorted(fields(response)) == ["balance", "credit_limit", "currency", "name"]
    messages = {
        f: d["msg"] for f, d in zip(fields(response), response.json()["detail"], strict=True)
    }
    assert "more than 4 decimal places" in messages["balance"]
    assert "at least 0" in messages["credit_limit"]


def test_money_must_be_text_and_unknown_fields_are_refused(web: WebEnv) -> None:
    floaty = web.post("/api/v1/accounts", {"name": "f", "currency": "USD", "balance": 0.1})
    assert floaty.status_code == 422 and fields(floaty) == ["balance"]
    extra = web.post("/api/v1/accounts", {"name": "f", "currency": "USD", "colour": "red"})
    assert extra.status_code == 422 and fields(extra) == ["colour"]
    missing = web.post("/api/v1/accounts", {"name": "f"})
    assert missing.status_code == 422 and fields(missing) == ["currency"]


def test_currency_of_an_existing_account_cannot_change(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "a", "currency": "USD"})
    response = web.put("/api/v1/accounts/a", {"currency": "EUR"})
    assert response.status_code == 422 and fields(response) == ["currency"]


def test_topup_and_adjustment_are_audited(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "acme", "currency": "USD"})
    top = web.post("/api/v1/accounts/acme/topup", {"amount": "10.10", "note": "wire 42"})
    assert top.status_code == 200 and top.json()["balance"] == "10.1000"
    adj = web.post("/api/v1/accounts/acme/adjustments", {"amount": "-0.0001", "note": "rounding"})
    assert adj.json()["balance"] == "10.0999", adj.text
    trail = web.get("/api/v1/accounts/acme/changes").json()
    assert [(c["kind"], c["amount"], c["actor"], c["note"]) for c in trail] == [
        ("adjustment", "-0.0001", "admin", "rounding"),
        ("topup", "10.1000", "admin", "wire 42"),
    ]
    assert all(c["created_at"].endswith("Z") for c in trail)


def test_balance_changes_validate(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "acme", "currency": "USD"})
    negative = web.post("/api/v1/accounts/acme/topup", {"amount": "-5", "note": "x"})
    assert negative.status_code == 422 and fields(negative) == ["amount"]
    no_reason = web.post("/api/v1/accounts/acme/topup", {"amount": "5", "note": " "})
    assert no_reason.status_code == 422 and fields(no_reason) == ["note"]
    zero = web.post("/api/v1/accounts/acme/adjustments", {"amount": "0", "note": "x"})
    assert zero.status_code == 422 and fields(zero) == ["amount"]
    huge = web.post("/api/v1/accounts/acme/topup", {"amount": "1e30", "note": "x"})
    assert huge.status_code == 422 and fields(huge) == ["amount"]
    assert (
        web.post("/api/v1/accounts/nobody/topup", {"amount": "5", "note": "x"}).status_code == 404
    )


def test_the_node_s_own_balance_is_shown_beside_the_stored_one(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "acme", "currency": "USD", "balance": "10"})
    web.node.live_balances[1] = (Decimal("9.5000"), Decimal("14.5000"))
    body = web.get("/api/v1/accounts/acme").json()
    assert (body["balance"], body["live_balance"], body["available"]) == (
        "10.0000",
        "9.5000",
        "14.5000",
    )
