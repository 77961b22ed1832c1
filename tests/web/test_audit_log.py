"""The audit log through the front doors: the API (a token's name), the pages (the user), the
address each came from; the Audit page (admins only) with filters and CSV; the API's export."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from smartswitch.cli import main

from .conftest import WebEnv
from .test_api_config import CUSTOMER, setup_world
from .test_ui import login, post_form


def entries(web: WebEnv, **query: str) -> list[dict[str, Any]]:
    response = web.get("/api/v1/audit-log", params=query)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def test_api_changes_name_the_token_and_the_address(web: WebEnv) -> None:
    setup_world(web)
    created = web.post(
        "/api/v1/peers",
        {"name": "pbx", **CUSTOMER, "username": "pbx1", "password": "pbx-digest-secret-9"},
        role="operator",
    )
    assert created.status_code == 201, created.text
    [entry] = entries(web, entity="peer")
    assert (entry["actor"], entry["source"], entry["address"]) == (
        "operator (token test)",
        "api",
        "testclient",
    )
    assert (entry["action"], entry["name"]) == ("create", "pbx")
    assert entry["changes"]["password"] == [None, "(new secret)"]
    assert entry["changes"]["account"] == [None, "cust"]
    assert "pbx-digest-secret-9" not in json.dumps(entries(web))
    assert web.delete("/api/v1/peers/pbx").status_code == 204
    assert [e["action"] for e in entries(web, entity="peer")] == ["delete", "create"]


def test_page_changes_name_the_user(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "acme", "currency": "USD"})
    login(web, "operator")
    done = post_form(
        web,
        "/accounts/acme",
        "/accounts/acme/balance",
        {"kind": "topup", "amount": "25.50", "note": "invoice 7"},
    )
    assert done.status_code == 303
    [topup] = entries(web, entity="account", actor="operator")
    assert (topup["actor"], topup["source"], topup["action"]) == ("operator", "web", "topup")
    assert topup["changes"]["balance"] == ["0.0000", "25.5000"]


def test_audit_page_is_for_admins_with_filters_and_csv(web: WebEnv) -> None:
    setup_world(web)
    login(web, "operator")
    assert web.client.get("/audit").status_code == 403
    assert web.client.get("/audit.csv").status_code == 403
    assert web.get("/api/v1/audit-log", role="operator").status_code == 403
    login(web)
    page = web.client.get("/audit?entity=tariff")
    assert page.status_code == 200
    table = page.text[page.text.index('id="audit-table"') :]
    assert "retail" in table and "buy" in table and "carrier" not in table
    assert "currency: - -&gt; USD" in table
    assert web.client.get("/audit?since=yesterday").status_code == 422
    exported = web.client.get("/audit.csv?entity=account")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["name"] for r in rows) == ["carrier", "cust"]
    assert {r["actor"] for r in rows} == {"admin (token test)"}
    api_csv = web.get("/api/v1/audit-log", params={"format": "csv", "entity": "account"})
    assert api_csv.text == exported.text


def test_users_and_tokens_are_audited(web: WebEnv) -> None:
    made = web.post("/api/v1/users", {"name": "eve", "role": "read-only"})
    assert made.status_code == 201
    assert web.post("/api/v1/tokens", {"name": "ci"}).status_code == 201
    [token, user] = entries(web)[:2]
    assert (user["entity"], user["name"], user["changes"]) == (
        "user",
        "eve",
        {"enabled": [None, True], "password": [None, "(new secret)"], "role": [None, "read-only"]},
    )
    assert (token["entity"], token["name"]) == ("token", "admin/ci")
    assert made.json()["password"] not in json.dumps(entries(web))


def test_cli_export(web: WebEnv, capsys: Any) -> None:
    setup_world(web)
    data_dir = str(web.node.config.data_dir)
    assert main(["audit-log", "export", "--entity", "tariff", "--data-dir", data_dir]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == ["retail", "buy"]  # oldest first
    assert main(["audit-log", "export", "--format", "json", "--data-dir", data_dir]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["name"] for line in lines] == ["cust", "carrier", "retail", "buy"]
