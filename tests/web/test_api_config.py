"""Tariffs, rates (CSV), peers, routes and settings through the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from smartswitch.model.capture import CAPTURE_DEFAULTS

from .conftest import WebEnv


def fields(response: Any) -> list[str]:
    return [".".join(str(p) for p in d["loc"][1:]) for d in response.json()["detail"]]


def setup_world(web: WebEnv) -> None:
    assert web.post("/api/v1/accounts", {"name": "cust", "currency": "USD"}).status_code == 201
    assert web.post("/api/v1/accounts", {"name": "carrier", "currency": "USD"}).status_code == 201
    assert web.post("/api/v1/tariffs", {"name": "retail"}).status_code == 201
    assert web.post("/api/v1/tariffs", {"name": "buy"}).status_code == 201


CUSTOMER = {"role": "customer", "account": "cust", "tariff": "retail", "acl": ["192.0.2.0/24"]}
SUPPLIER = {
    "role": "supplier",
    "account": "carrier",
    "tariff": "buy",
    "address": "198.51.100.7:5060",
}


# ---- tariffs and rates


def test_tariff_crud(web: WebEnv) -> None:
    assert web.post("/api/v1/tariffs", {"name": "t1", "currency": "EUR"}).status_code == 201
    assert web.get("/api/v1/tariffs/t1").json() == {"name": "t1", "currency": "EUR", "rates": 0}
    assert web.post("/api/v1/tariffs", {"name": "t1"}).status_code == 409
    bad = web.post("/api/v1/tariffs", {"name": "", "currency": "EURO"})
    assert bad.status_code == 422 and sorted(fields(bad)) == ["currency", "name"]
    assert web.put("/api/v1/tariffs/t1", {"currency": "GBP"}).json()["currency"] == "GBP"
    assert web.delete("/api/v1/tariffs/t1").status_code == 204
    assert web.get("/api/v1/tariffs/t1").status_code == 404


CSV = (
    "prefix,price_per_minute,connect_fee,increment,free_seconds,effective_from,effective_to\n"
    "1,0.010000,0,60/60,0,,\n"
    "44,0.02,0.001,1/1,5,2025-01-01T00:00:00Z,\n"
    "4420,0.1,,30/6,,,\n"
)


def put_csv(web: WebEnv, name: str, text: str, role: str = "admin") -> Any:
    return web.client.put(
        f"/api/v1/tariffs/{name}/rates.csv",
        content=text.encode(),
        headers={**web.auth(role), "Content-Type": "text/csv"},
    )


def test_rates_csv_round_trip(web: WebEnv) -> None:
    web.post("/api/v1/tariffs", {"name": "retail"})
    response = put_csv(web, "retail", CSV)
    assert response.status_code == 200, response.text
    assert response.json()["rates"] == 3 and response.json()["changed"] is True
    rates = web.get("/api/v1/tariffs/retail/rates").json()
    assert rates["total"] == 3
    assert rates["rates"][1] == {
        "prefix": "44",
        "price_per_minute": "0.020000",
        "connect_fee": "0.001000",
        "increment": "1/1",
        "free_seconds": 5,
        "effective_from": "2025-01-01T00:00:00.000Z",
        "effective_to": None,
    }
    assert web.get("/api/v1/tariffs/retail/rates", params={"prefix": "44"}).json()["total"] == 2
    exported = web.get("/api/v1/tariffs/retail/rates.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert (
        lines[0]
        == "prefix,price_per_minute,connect_fee,increment,free_seconds,effective_from,effective_to"
    )
    assert lines[1] == "1,0.010000,0.000000,60/60,0,,"
    # Importing the export changes nothing.
    assert put_csv(web, "retail", exported.text).json()["changed"] is False


def test_bad_csv_names_its_lines_and_changes_nothing(web: WebEnv) -> None:
    web.post("/api/v1/tariffs", {"name": "retail"})
    put_csv(web, "retail", CSV)
    bad = (
        "prefix,price_per_minute,increment\n"
        "1,0.01,60/60\n"
        "4x,0.01,1/1\n"
        "45,-1,1/1\n"
        "46,0.01,0/0\n"
        "1,0.02,1/1\n"
    )
    response = put_csv(web, "retail", bad)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["line"], d["loc"][-1]) for d in detail] == [
        (3, "prefix"),
        (4, "price_per_minute"),
        (5, "increment"),
        (6, "prefix"),
    ]
    assert "already rated on line 2" in detail[-1]["msg"]
    assert web.get("/api/v1/tariffs/retail").json()["rates"] == 3  # untouched
    header = put_csv(web, "retail", "prefix,cost\n1,2\n")
    assert header.status_code == 422 and {d["loc"][-1] for d in header.json()["detail"]} == {
        "cost",
        "price_per_minute",
    }
    assert put_csv(web, "retail", "").status_code == 422
    assert put_csv(web, "nope", CSV).status_code == 404
    assert put_csv(web, "retail", CSV, role="read-only").status_code == 403


def test_import_of_50000_rates_takes_seconds(web: WebEnv) -> None:
    web.post("/api/v1/tariffs", {"name": "big"})
    rows = ["prefix,price_per_minute,connect_fee,increment"]
    rows += [f"{1000000 + i},0.{i % 1000:03d}1,0,60/60" for i in range(50_000)]
    started = time.monotonic()
    response = put_csv(web, "big", "\n".join(rows) + "\n")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    assert response.json()["rates"] == 50_000
    assert web.get("/api/v1/tariffs/big").json()["rates"] == 50_000
    print(f"50 000 rates imported in {elapsed:.2f} s")
    assert elapsed < 20  # "in seconds" (measured well under this; the bound absorbs a busy CI)


# ---- peers


def test_peer_crud(web: WebEnv) -> None:
    setup_world(web)
    created = web.post("/api/v1/peers", {"name": "c1", **CUSTOMER, "password": None})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["acl"] == ["192.0.2.0/24"] and body["tariff"] == "retail"
    assert body["has_password"] is False and "password" not in body
    assert web.post("/api/v1/peers", {"name": "s1", **SUPPLIER}).status_code == 201
    names = [p["name"] for p in web.get("/api/v1/peers").json()]
    assert names == ["c1", "s1"]
    replaced = web.put("/api/v1/peers/c1", {**CUSTOMER, "max_calls": 10, "enabled": False})
    assert replaced.status_code == 200 and replaced.json()["max_calls"] == 10
    assert replaced.json()["enabled"] is False
    assert web.delete("/api/v1/peers/c1").status_code == 204
    assert web.get("/api/v1/peers/c1").status_code == 404


def test_peer_validation_names_fields(web: WebEnv) -> None:
    setup_world(web)
    response = web.post(
        "/api/v1/peers",
        {"name": "c", "role": "customer", "account": "cust", "acl": ["10.0.0.1/8", "x"]},
    )
    assert response.status_code == 422
    assert sorted(fields(response)) == ["acl.0", "acl.1"]
    rules = web.post("/api/v1/peers", {"name": "c", "role": "customer", "account": "cust"})
    assert sorted(fields(rules)) == ["acl", "tariff"]
    unknown = web.post("/api/v1/peers", {"name": "c", **CUSTOMER, "tariff": "retial"})
    assert unknown.status_code == 422 and fields(unknown) == ["tariff"]
    assert "unknown tariff 'retial'" in unknown.json()["detail"][0]["msg"]
    role = web.post("/api/v1/peers", {"name": "c", **CUSTOMER, "role": "boss"})
    assert role.status_code == 422 and fields(role) == ["role"]
    supplier = web.post("/api/v1/peers", {"name": "s", **SUPPLIER, "address": None})
    assert fields(supplier) == ["address"]
    rewrite = web.post(
        "/api/v1/peers",
        {"name": "c", **CUSTOMER, "callee_rewrite": [{"match": "(", "replace": ""}]},
    )
    assert fields(rewrite) == ["callee_rewrite.0"]


def test_acl_conflicts_are_refused(web: WebEnv) -> None:
    setup_world(web)
    assert web.post("/api/v1/peers", {"name": "c1", **CUSTOMER}).status_code == 201
    clash = web.post("/api/v1/peers", {"name": "c2", **CUSTOMER})
    assert clash.status_code == 422 and fields(clash) == ["acl"]


# ---- routes


def test_route_crud_and_rules(web: WebEnv) -> None:
    setup_world(web)
    web.post("/api/v1/peers", {"name": "c1", **CUSTOMER})
    web.post("/api/v1/peers", {"name": "s1", **SUPPLIER})
    created = web.post("/api/v1/routes", {"prefix": "44", "suppliers": [{"peer": "s1"}]})
    assert created.status_code == 201, created.text
    assert created.json()["suppliers"] == [{"peer": "s1", "priority": 0, "weight": 1}]
    default = web.put(
        "/api/v1/routes/default", {"strategy": "least_cost", "suppliers": [{"peer": "s1"}]}
    )
    assert default.status_code == 200 and default.json()["prefix"] == ""
    assert [r["key"] for r in web.get("/api/v1/routes").json()] == ["default", "44"]
    customer = web.post("/api/v1/routes", {"prefix": "1", "suppliers": [{"peer": "c1"}]})
    assert customer.status_code == 422 and fields(customer) == ["suppliers.0.peer"]
    empty = web.post("/api/v1/routes", {"prefix": "1", "suppliers": []})
    assert fields(empty) == ["suppliers"]
    bad_prefix = web.post("/api/v1/routes", {"prefix": "1a", "suppliers": [{"peer": "s1"}]})
    assert fields(bad_prefix) == ["prefix"]
    # A supplier in use cannot go.
    assert web.delete("/api/v1/peers/s1").status_code == 409
    assert web.delete("/api/v1/routes/44").status_code == 204
    assert web.delete("/api/v1/routes/default").status_code == 204
    assert web.delete("/api/v1/peers/s1").status_code == 204


def test_every_change_bumps_the_config_version(web: WebEnv) -> None:
    versions = []
    changes: tuple[Callable[[], Any], ...] = (
        lambda: web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}),
        lambda: web.put("/api/v1/accounts/a", {"currency": "USD", "credit_limit": "1"}),
        lambda: web.post("/api/v1/tariffs", {"name": "t"}),
        lambda: put_csv(web, "t", CSV),
        lambda: web.put("/api/v1/settings/bind_address", {"value": "203.0.113.5"}),
    )
    for call in changes:
        assert call().status_code in (200, 201)
        import sqlite3

        db = sqlite3.connect(web.url.split("///", 1)[1])
        versions.append(db.execute("SELECT version FROM config_version").fetchone()[0])
    assert versions == sorted(set(versions)) and len(versions) == 5
    # ... and each asks the node to reload at once rather than at its next poll.
    assert web.node.reloads_asked >= 5


# ---- settings


def test_settings(web: WebEnv) -> None:
    defaults = {"bind_address": "", **CAPTURE_DEFAULTS}
    assert web.get("/api/v1/settings").json() == defaults
    ok = web.put("/api/v1/settings/bind_address", {"value": "203.0.113.5"})
    assert ok.status_code == 200 and ok.json()["value"] == "203.0.113.5"
    assert web.get("/api/v1/settings", role="read-only").json() == {
        **defaults,
        "bind_address": "203.0.113.5",
    }
    bad = web.put("/api/v1/settings/bind_address", {"value": "not-an-ip"})
    assert bad.status_code == 422 and fields(bad) == ["value"]
    assert web.put("/api/v1/settings/colour", {"value": "red"}).status_code == 404
    assert web.put("/api/v1/settings/bind_address", {"value": ""}).json()["value"] == ""
