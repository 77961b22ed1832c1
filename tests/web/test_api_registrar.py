"""Subscribers and DIDs through the API and the pages (the registrar's tables, the same
provisioning writer); a peer's registrar fields."""

from __future__ import annotations

import sqlite3
from typing import Any

from .conftest import WebEnv
from .test_api_config import CUSTOMER, SUPPLIER, setup_world
from .test_ui import login, post_form


def fields(response: Any) -> list[str]:
    return [".".join(str(p) for p in d["loc"][1:]) for d in response.json()["detail"]]


SUB = {"account": "cust", "tariff": "retail", "password": "phone secret 1"}


def test_subscriber_crud_and_password_never_stored(web: WebEnv) -> None:
    setup_world(web)
    created = web.post("/api/v1/subscribers", {"username": "alice", **SUB, "caller_id": "15550001"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["username"] == "alice" and body["max_contacts"] == 5 and "password" not in body
    db = sqlite3.connect(web.url.split("///", 1)[1])
    row = db.execute("SELECT realm, ha1_md5, ha1_sha256 FROM subscribers").fetchone()
    assert row[0] == "smartswitch" and len(row[1]) == 32 and len(row[2]) == 64
    assert "phone secret 1" not in str(db.execute("SELECT * FROM subscribers").fetchall())
    # A PUT without the password keeps the hashes.
    updated = web.put("/api/v1/subscribers/alice", {"account": "cust", "max_contacts": 2})
    assert updated.status_code == 200 and updated.json()["max_contacts"] == 2
    assert db.execute("SELECT ha1_md5 FROM subscribers").fetchone()[0] == row[1]
    assert web.post("/api/v1/subscribers", {"username": "alice", **SUB}).status_code == 409
    assert [s["username"] for s in web.get("/api/v1/subscribers", role="read-only").json()] == [
        "alice"
    ]
    assert web.delete("/api/v1/subscribers/alice").status_code == 204
    assert web.get("/api/v1/subscribers/alice").status_code == 404


def test_subscriber_validation(web: WebEnv) -> None:
    setup_world(web)
    bad = web.post(
        "/api/v1/subscribers",
        {"username": "bob", "account": "nobody", "allowed_cidrs": ["10.0.0.1/8"], "caller_id": "x"},
    )
    assert bad.status_code == 422
    assert sorted(fields(bad)) == ["allowed_cidrs.0", "caller_id"]
    no_password = web.post("/api/v1/subscribers", {"username": "bob", "account": "nobody"})
    assert sorted(fields(no_password)) == ["account", "password"]
    web.post(
        "/api/v1/peers",
        {"name": "c1", **CUSTOMER, "username": "carol", "password": "carol-trunk-pass-5"},
    )
    clash = web.post("/api/v1/subscribers", {"username": "carol", **SUB})
    assert clash.status_code == 422 and fields(clash) == ["username"]


def test_dids(web: WebEnv) -> None:
    setup_world(web)
    web.post("/api/v1/subscribers", {"username": "alice", **SUB})
    web.post("/api/v1/peers", {"name": "s1", **SUPPLIER})
    a = web.post("/api/v1/dids", {"number": "15557000001", "subscriber": "alice"})
    assert a.status_code == 201 and a.json() == {
        "number": "15557000001",
        "subscriber": "alice",
        "peer": None,
        "enabled": True,
    }
    b = web.put("/api/v1/dids/15557000002", {"peer": "s1"})
    assert b.status_code == 200 and b.json()["peer"] == "s1"
    both = web.post("/api/v1/dids", {"number": "1", "subscriber": "alice", "peer": "s1"})
    assert both.status_code == 422 and fields(both) == ["subscriber"]
    unknown = web.post("/api/v1/dids", {"number": "2", "subscriber": "zed"})
    assert unknown.status_code == 422 and fields(unknown) == ["subscriber"]
    assert web.post("/api/v1/dids", {"number": "12a", "peer": "s1"}).status_code == 422
    # A subscriber with DIDs stays.
    assert web.delete("/api/v1/subscribers/alice").status_code == 409
    assert web.delete("/api/v1/dids/15557000001").status_code == 204
    assert [d["number"] for d in web.get("/api/v1/dids").json()] == ["15557000002"]


def test_peer_registrar_fields(web: WebEnv) -> None:
    setup_world(web)
    register = {"username": "sw1", "password": "reg secret", "registrar": "198.51.100.9:5060"}
    created = web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "register": register})
    assert created.status_code == 201, created.text
    assert created.json()["register"] == {
        "username": "sw1",
        "registrar": "198.51.100.9:5060",
        "expires": 3600,
        "nodes": [],
    }
    customer = web.post("/api/v1/peers", {"name": "c1", **CUSTOMER, "register": register})
    assert customer.status_code == 422 and fields(customer) == ["register"]
    bad = web.post(
        "/api/v1/peers", {"name": "s2", **SUPPLIER, "register": {**register, "expires": 1}}
    )
    assert bad.status_code == 422 and fields(bad) == ["register.expires"]


def test_subscriber_and_did_pages(web: WebEnv) -> None:
    setup_world(web)
    login(web)
    bad = post_form(web, "/subscribers", "/subscribers", {"username": "alice", "account": "cust"})
    assert bad.status_code == 422 and "required for a new subscriber" in bad.text
    ok = post_form(
        web,
        "/subscribers",
        "/subscribers",
        {"username": "alice", "account": "cust", "password": "pw 123456 quartz", "enabled": "true"},
    )
    assert ok.status_code == 303
    page = web.client.get("/subscribers").text
    assert "alice" in page and "pw 123456 quartz" not in page
    did = post_form(web, "/dids", "/dids", {"number": "15557000001", "subscriber": "alice"})
    assert did.status_code == 303
    assert "15557000001" in web.client.get("/dids").text
    neither = post_form(web, "/dids", "/dids", {"number": "15557000002"})
    assert neither.status_code == 422 and "a subscriber or a peer" in neither.text


def test_peer_page_never_shows_the_secret_and_keeps_it(web: WebEnv) -> None:
    setup_world(web)
    web.post(
        "/api/v1/peers",
        {"name": "c1", **CUSTOMER, "username": "trunk", "password": "trunk-s3cret-pass!"},
    )
    login(web)
    page = web.client.get("/peers/c1").text
    assert "trunk-s3cret-pass!" not in page
    saved = post_form(
        web,
        "/peers/c1",
        "/peers",
        {
            "existing": "c1",
            "role": "customer",
            "account": "cust",
            "tariff": "retail",
            "acl": "192.0.2.0/24",
            "username": "trunk",
            "password": "",
            "enabled": "true",
        },
    )
    assert saved.status_code == 303, saved.text
    db = sqlite3.connect(web.url.split("///", 1)[1])
    assert (
        db.execute("SELECT password FROM peers WHERE name='c1'").fetchone()[0]
        == "trunk-s3cret-pass!"
    )
