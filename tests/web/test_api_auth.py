"""Who may do what: tokens, roles, the read-only node, the public endpoints."""

from __future__ import annotations

import pytest

from .conftest import WebEnv

RESOURCES = [
    "/api/v1/accounts",
    "/api/v1/tariffs",
    "/api/v1/peers",
    "/api/v1/routes",
    "/api/v1/settings",
    "/api/v1/cdrs",
    "/api/v1/calls",
    "/api/v1/status",
]


@pytest.mark.parametrize("path", RESOURCES)
def test_no_token_is_401(web: WebEnv, path: str) -> None:
    response = web.client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_wrong_token_is_401(web: WebEnv) -> None:
    for header in ("Bearer sst_not-a-token", "Bearer ", "Basic YWRtaW46eA==", "sst_x"):
        response = web.client.get("/api/v1/accounts", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_a_session_cookie_is_no_api_token(web: WebEnv) -> None:
    web.client.post("/login", data={"username": "admin", "password": "correct horse battery"})
    assert web.client.get("/api/v1/accounts").status_code == 401


@pytest.mark.parametrize("path", RESOURCES)
def test_read_only_role_reads(web: WebEnv, path: str) -> None:
    assert web.get(path, role="read-only").status_code == 200


def test_read_only_role_cannot_write(web: WebEnv) -> None:
    attempts = [
        ("post", "/api/v1/accounts", {"name": "x", "currency": "USD"}),
        ("put", "/api/v1/accounts/x", {"currency": "USD"}),
        ("post", "/api/v1/tariffs", {"name": "t"}),
        ("put", "/api/v1/settings/bind_address", {"value": ""}),
        ("post", "/api/v1/users", {"name": "eve", "role": "admin"}),
    ]
    for method, path, body in attempts:
        response = getattr(web, method)(path, body, role="read-only")
        assert response.status_code == 403, (method, path, response.text)
    assert web.delete("/api/v1/accounts/x", role="read-only").status_code == 403
    assert web.delete("/api/v1/calls/x", role="read-only").status_code == 403


def test_operator_writes_but_is_no_admin(web: WebEnv) -> None:
    assert (
        web.post("/api/v1/accounts", {"name": "op", "currency": "USD"}, role="operator").status_code
        == 201
    )
    assert (
        web.put("/api/v1/settings/bind_address", {"value": ""}, role="operator").status_code == 403
    )
    assert (
        web.post("/api/v1/users", {"name": "eve", "role": "admin"}, role="operator").status_code
        == 403
    )
    assert web.get("/api/v1/users", role="operator").status_code == 403


def test_read_only_node_answers_409_naming_the_primary(web: WebEnv) -> None:
    assert web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}).status_code == 201
    web.node.read_only = True
    response = web.post("/api/v1/accounts", {"name": "b", "currency": "USD"})
    assert response.status_code == 409
    assert "db1.example.net" in response.json()["detail"]
    assert web.post("/api/v1/accounts/a/topup", {"amount": "1", "note": "x"}).status_code == 409
    assert web.put("/api/v1/tariffs/t", {"currency": "USD"}).status_code == 409
    assert web.delete("/api/v1/accounts/a").status_code == 409
    # Reads go on, and say so.
    assert web.get("/api/v1/accounts").status_code == 200
    status = web.get("/api/v1/status").json()
    assert status["read_only"] is True and status["primary"] == "db1.example.net"


FENCED = (
    "this node cannot confirm it holds the primary lease: etcd /v3/kv/range: no member answered"
)


def test_a_primary_that_cannot_confirm_its_lease_answers_409_with_the_reason(
    web: WebEnv,
) -> None:
    # The node's write fence is asked at each change (never a cached answer), after the
    # read-only check; reads are not fenced.
    web.node.write_refused = FENCED
    checks = web.node.write_checks
    response = web.post("/api/v1/accounts", {"name": "a", "currency": "USD"})
    assert response.status_code == 409 and response.json()["detail"] == FENCED
    assert web.put("/api/v1/tariffs/t", {"currency": "USD"}).status_code == 409
    assert web.node.write_checks == checks + 2
    assert web.get("/api/v1/accounts").json() == []
    web.node.write_refused = None
    assert web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}).status_code == 201
    assert web.node.write_checks == checks + 3


def test_health_and_metrics_are_public_and_nothing_else(web: WebEnv) -> None:
    health = web.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["config_version"] == 1
    assert web.client.get("/metrics").status_code == 200
    assert web.client.get("/static/htmx.min.js").status_code == 200
    for path in ("/", "/accounts", "/cdrs", "/api/docs", "/api/v1/openapi.json", "/settings"):
        response = web.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login")


def test_tokens_are_made_for_the_caller_and_stored_hashed(web: WebEnv) -> None:
    response = web.post("/api/v1/tokens", {"name": "ci"}, role="read-only")
    assert response.status_code == 201
    token = response.json()["token"]
    assert token.startswith("sst_")
    me = web.client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    import sqlite3

    db = sqlite3.connect(web.url.split("///", 1)[1])
    stored = [row[0] for row in db.execute("SELECT token_hash FROM api_tokens")]
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_users_are_created_by_admins_with_argon2(web: WebEnv) -> None:
    response = web.post("/api/v1/users", {"name": "carol", "role": "operator"})
    assert response.status_code == 201
    password = response.json()["password"]
    assert len(password) >= 16
    bad = web.post("/api/v1/users", {"name": "dave", "role": "operator", "password": "short"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "password"]
    dup = web.post("/api/v1/users", {"name": "carol", "role": "operator"})
    assert dup.status_code == 422 and dup.json()["detail"][0]["loc"] == ["body", "name"]
    import sqlite3

    db = sqlite3.connect(web.url.split("///", 1)[1])
    (hash_,) = db.execute("SELECT password_hash FROM users WHERE name='carol'").fetchone()
    assert hash_.startswith("$argon2id$") and password not in hash_
    assert any(u["name"] == "carol" for u in web.get("/api/v1/users").json())


def test_registrar_state_needs_a_token_too(web: WebEnv) -> None:
    from pathlib import Path

    from smartswitch.web.security import local_token

    assert web.client.get("/api/v1/registrations").status_code == 401
    assert web.get("/api/v1/registrations", role="read-only").status_code == 200
    # Commands on the node's machine use the token its data directory implies (read-only).
    token = local_token(Path(web.node.config.data_dir))
    assert token is not None
    local = {"Authorization": f"Bearer {token}"}
    assert web.client.get("/api/v1/registrations", headers=local).status_code == 200
    assert web.client.post("/api/v1/tariffs", json={"name": "t"}, headers=local).status_code == 403
    forged = {"Authorization": "Bearer ssl_" + "0" * 64}
    assert web.client.get("/api/v1/registrations", headers=forged).status_code == 401
