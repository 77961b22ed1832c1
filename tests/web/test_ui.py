"""The pages: login, CSRF, forms with precise field errors, roles and read-only mode."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import PASSWORD, WebEnv
from .fakes import live_call


def login(web: WebEnv, name: str = "admin", password: str = PASSWORD) -> Any:
    return web.client.post(
        "/login", data={"username": name, "password": password}, follow_redirects=False
    )


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def post_form(web: WebEnv, page: str, action: str, data: dict[str, str]) -> Any:
    token = csrf(web.client.get(page).text)
    return web.client.post(action, data={**data, "csrf_token": token}, follow_redirects=False)


def test_login_sets_a_strict_httponly_cookie(web: WebEnv) -> None:
    response = login(web)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert web.client.get("/accounts").status_code == 200


def test_secure_cookie_when_configured(web: WebEnv) -> None:
    web.node.config.cookie_secure = True
    assert "Secure" in login(web).headers["set-cookie"]


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(web: WebEnv) -> None:
    first = web.client.get("/cdrs?sip_code=200", follow_redirects=False)
    assert first.headers["location"] == "/login?next=%2Fcdrs%3Fsip_code%3D200"
    response = web.client.post(
        "/login",
        data={"username": "admin", "password": PASSWORD, "next": "/cdrs?sip_code=200"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/cdrs?sip_code=200"
    evil = web.client.post(
        "/login",
        data={"username": "admin", "password": PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert evil.headers["location"] == "/"


def test_wrong_password_then_rate_limited(web: WebEnv) -> None:
    for _ in range(5):
        response = login(web, password="wrong password!")
        assert response.status_code == 401
        assert "wrong user name or password" in response.text
    blocked = login(web)  # even the right password waits now
    assert blocked.status_code == 429 and "too many failed logins" in blocked.text
    assert "smartswitch_session" not in blocked.headers.get("set-cookie", "")


def test_forged_cookie_is_no_login(web: WebEnv) -> None:
    cookie = login(web).cookies["smartswitch_session"]
    payload, _, _signature = cookie.partition(".")
    web.client.cookies.set("smartswitch_session", payload + ".AAAA")
    assert web.client.get("/", follow_redirects=False).status_code == 303


def test_forms_need_the_csrf_token(web: WebEnv) -> None:
    login(web)
    response = web.client.post("/accounts", data={"name": "x", "currency": "USD"})
    assert response.status_code == 403
    assert "form has expired" in response.text
    bad = web.client.post("/accounts", data={"name": "x", "currency": "USD", "csrf_token": "x"})
    assert bad.status_code == 403


def test_account_form_shows_each_bad_field(web: WebEnv) -> None:
    login(web)
    response = post_form(
        web,
        "/accounts",
        "/accounts",
        {"name": "bad name", "currency": "us", "balance": "1.000001", "prepaid": "true"},
    )
    assert response.status_code == 422
    html = response.text
    assert 'id="e-name"' in html and "is not a valid name" in html
    assert 'id="e-currency"' in html and "3-letter ISO 4217" in html
    assert 'id="e-balance"' in html and "more than 4 decimal places" in html
    assert 'value="bad name"' in html  # what was typed is kept


def test_topup_through_the_page_is_audited(web: WebEnv) -> None:
    login(web)
    created = post_form(web, "/accounts", "/accounts", {"name": "acme", "currency": "USD"})
    assert created.status_code == 303
    missing_note = post_form(
        web, "/accounts/acme", "/accounts/acme/balance", {"kind": "topup", "amount": "25"}
    )
    assert missing_note.status_code == 422 and "audit trail" in missing_note.text
    done = post_form(
        web,
        "/accounts/acme",
        "/accounts/acme/balance",
        {"kind": "topup", "amount": "25.50", "note": "invoice 7"},
    )
    assert done.status_code == 303 and "balance+25.5000" in done.headers["location"]
    page = web.client.get("/accounts/acme").text
    assert "25.5000" in page and "invoice 7" in page and ">admin<" in page


def test_peer_form_errors_and_save(web: WebEnv) -> None:
    login(web)
    for data in ({"name": "acme", "currency": "USD"},):
        post_form(web, "/accounts", "/accounts", data)
    post_form(web, "/tariffs", "/tariffs", {"name": "retail", "currency": "USD"})
    bad = post_form(
        web,
        "/peers/new",
        "/peers",
        {"name": "c1", "role": "customer", "account": "acme", "acl": "10.0.0.1/8"},
    )
    assert bad.status_code == 422
    assert "has host bits set" in bad.text
    no_tariff = post_form(
        web,
        "/peers/new",
        "/peers",
        {"name": "c1", "role": "customer", "account": "acme", "acl": "10.0.0.0/8"},
    )
    assert no_tariff.status_code == 422 and "required for a customer" in no_tariff.text
    good = post_form(
        web,
        "/peers/new",
        "/peers",
        {
            "name": "c1",
            "role": "customer",
            "account": "acme",
            "tariff": "retail",
            "acl": "10.0.0.0/8\n192.0.2.1",
            "callee_rewrite": "^00 -> ",
            "enabled": "true",
        },
    )
    assert good.status_code == 303, good.text
    page = web.client.get("/peers/c1").text
    assert "10.0.0.0/8\n192.0.2.1/32" in page and "^00 -&gt; " in page


def test_rate_import_page_lists_line_errors(web: WebEnv) -> None:
    login(web)
    post_form(web, "/tariffs", "/tariffs", {"name": "retail", "currency": "USD"})
    token = csrf(web.client.get("/tariffs/retail").text)
    good = web.client.post(
        "/tariffs/retail/import",
        data={"csrf_token": token},
        files={"file": ("r.csv", b"prefix,price_per_minute\n1,0.01\n44,0.02\n", "text/csv")},
        follow_redirects=False,
    )
    assert good.status_code == 303 and "imported+2+rates" in good.headers["location"]
    bad = web.client.post(
        "/tariffs/retail/import",
        data={"csrf_token": token},
        files={"file": ("r.csv", b"prefix,price_per_minute\n1,x\n", "text/csv")},
    )
    assert bad.status_code == 422 and "r.csv:2: price_per_minute" in bad.text
    assert "Nothing was imported" in bad.text
    export = web.client.get("/tariffs/retail/rates.csv")
    assert export.text.splitlines()[1:] == [
        "1,0.010000,0.000000,1/1,0,,",
        "44,0.020000,0.000000,1/1,0,,",
    ]


@pytest.mark.parametrize("page", ["/accounts", "/tariffs", "/peers", "/routes"])
def test_read_only_role_sees_no_write_controls(web: WebEnv, page: str) -> None:
    login(web, "readonly")
    html = web.client.get(page).text
    assert '<form method="post" action="/accounts"' not in html
    assert "New peer" not in html and "New route" not in html and "Create tariff" not in html


def test_read_only_node_banner_and_refusals(web: WebEnv) -> None:
    login(web)
    post_form(web, "/accounts", "/accounts", {"name": "acme", "currency": "USD"})
    token = csrf(web.client.get("/accounts").text)
    web.node.read_only = True
    for page in ("/", "/accounts", "/accounts/acme", "/peers", "/tariffs", "/settings"):
        html = web.client.get(page).text
        assert "Read-only:" in html and "db1.example.net" in html, page
        assert "Create account" not in html and "Record</button>" not in html
    refused = web.client.post(
        "/accounts", data={"name": "b", "currency": "USD", "csrf_token": token}
    )
    assert refused.status_code == 409 and "db1.example.net" in refused.text
    settings = web.client.get("/settings").text
    assert "<fieldset disabled>" in settings and "Save settings" not in settings


def test_a_change_refused_by_the_write_fence_says_why(web: WebEnv) -> None:
    login(web)
    token = csrf(web.client.get("/accounts").text)
    web.node.write_refused = "this node cannot confirm it holds the primary lease: etcd away"
    refused = web.client.post(
        "/accounts", data={"name": "b", "currency": "USD", "csrf_token": token}
    )
    assert refused.status_code == 409
    assert "cannot confirm it holds the primary lease: etcd away" in refused.text
    assert "b</a>" not in web.client.get("/accounts").text


def test_settings_form(web: WebEnv) -> None:
    login(web)
    bad = post_form(web, "/settings", "/settings", {"bind_address": "shared"})
    assert bad.status_code == 422 and "an IP address (the shared IP) or empty" in bad.text
    ok = post_form(web, "/settings", "/settings", {"bind_address": "203.0.113.9"})
    assert ok.status_code == 303
    assert 'value="203.0.113.9"' in web.client.get("/settings").text
    login(web, "operator")
    assert post_form(web, "/settings", "/settings", {"bind_address": ""}).status_code == 403


def test_users_tokens_and_password_change(web: WebEnv) -> None:
    login(web)
    made = post_form(web, "/users", "/users", {"name": "erin", "role": "read-only"})
    assert made.status_code == 200 and "shown once" in made.text
    token_page = post_form(web, "/tokens", "/tokens", {"name": "ci"})
    token = re.search(r'id="new-token" class="token">(sst_[^<]+)<', token_page.text)
    assert token is not None
    api = web.client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {token.group(1)}"})
    assert api.status_code == 200
    wrong = post_form(web, "/me", "/me", {"current": "nope", "password": "a new secret pw"})
    assert wrong.status_code == 422 and "wrong password" in wrong.text
    changed = post_form(web, "/me", "/me", {"current": PASSWORD, "password": "a new secret pw"})
    assert changed.status_code == 303
    assert login(web, password="a new secret pw").status_code == 303
    login(web, "operator")
    assert web.client.get("/users").status_code == 403


def test_hang_up_from_the_calls_page(web: WebEnv) -> None:
    web.node.live_calls["k1"] = live_call("k1")
    login(web)
    page = web.client.get("/calls").text
    assert "15551234567" in page and "Hang up" in page
    response = post_form(web, "/calls", "/calls/k1/hangup", {})
    assert response.status_code == 303 and web.node.hung_up == ["k1"]
    partial = web.client.get("/calls", headers={"HX-Request": "true"}).text
    assert "<html" not in partial and "No calls in progress" in partial


def test_cdr_page_filters(web: WebEnv) -> None:
    from .test_api_cdrs import world_with_cdrs

    world_with_cdrs(web)
    login(web)
    page = web.client.get("/cdrs", params={"sip_code": "486"}).text
    assert "Busy Here" in page and "4420711111" not in page
    bad = web.client.get("/cdrs", params={"sip_code": "99", "since": "soon"})
    assert bad.status_code == 422
    assert "must be at least 100" in bad.text and "ISO 8601" in bad.text
    csv_text = web.client.get("/cdrs.csv", params={"number": "44207"}).text
    assert len(csv_text.strip().splitlines()) == 2


def test_first_admin_is_made_once(web: WebEnv) -> None:
    import asyncio

    from smartswitch.web.app import bootstrap

    web_state = web.client.app.state.web  # type: ignore[attr-defined]
    assert asyncio.run(bootstrap(web_state)) is None  # users exist already
