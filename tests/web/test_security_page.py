"""The guard as operators see it: the Security page, the subscriber's page, ``/metrics``; and
the password policy through the API and the pages (the field named)."""

from __future__ import annotations

import time
from typing import Any

from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.sip.digest import AuthResult

from .conftest import WebEnv
from .fakes import FakeRegistrar
from .test_api_config import setup_world
from .test_ui import login, post_form


def attacked_guard() -> SourceGuard:
    """alice attacked from 12 addresses (in back-off), her phone trusted; one address banned."""
    guard = SourceGuard(GuardSettings(rate=0, fail_limit=3, account_fail_limit=10))
    now = time.time()
    guard.succeeded("192.0.2.10", "alice", now - 100)
    for n in range(12):
        source = f"198.51.100.{n}"
        if guard.admit(source, 'Digest username="alice"', now):
            guard.failed(source, now, AuthResult(False, "alice", False, "wrong password"))
    for _ in range(3):
        guard.failed("203.0.113.9", now, AuthResult(False, "mallory", False, "unknown user"))
    return guard


def with_guard(web: WebEnv, guard: SourceGuard) -> None:
    web.node.registrar = FakeRegistrar(guard)


def test_security_page_shows_attacked_accounts_and_bans(web: WebEnv) -> None:
    with_guard(web, attacked_guard())
    login(web, "readonly")
    page = web.client.get("/security")
    assert page.status_code == 200
    text = page.text
    row = text[text.index('id="guard-accounts"') : text.index('id="guard-bans"')]
    assert "alice" in row and "back-off" in row and "mallory" in row
    assert "203.0.113.9" in text[text.index('id="guard-bans"') :]
    assert 'digest failures: bad-password</td><td class="num">10' in text
    assert 'refused unchecked: account-backoff</td><td class="num">2' in text


def test_security_page_without_a_registrar(web: WebEnv) -> None:
    login(web)
    assert "no registrar" in web.client.get("/security").text


def test_the_subscriber_page_shows_its_state(web: WebEnv) -> None:
    setup_world(web)
    created = web.post(
        "/api/v1/subscribers",
        {"username": "alice", "account": "cust", "password": "alice-phone-pass-7"},
    )
    assert created.status_code == 201, created.text
    with_guard(web, attacked_guard())
    login(web)
    page = web.client.get("/subscribers/alice").text
    box = page[page.index('id="subscriber-security"') :]
    assert "back-off" in box and "1 trusted source;" in box


def test_metrics(web: WebEnv) -> None:
    guard = attacked_guard()
    guard.remote_failure("alice", "198.51.100.40", time.time(), "node2", "bad-password")
    with_guard(web, guard)
    text = web.client.get("/metrics").text
    for line in (
        'smartswitch_digest_failures_total{reason="bad-password"} 10',
        'smartswitch_guard_cluster_events_total{kind="failure"} 1',
        'smartswitch_guard_cluster_events_total{kind="success"} 0',
        'smartswitch_digest_failures_total{reason="unknown-account"} 3',
        'smartswitch_auth_refused_total{reason="account-backoff"} 2',
        "smartswitch_accounts_under_attack 1",
        "smartswitch_account_backoffs_total 1",
        "smartswitch_sources_banned 1",
    ):
        assert line in text.splitlines(), line


def fields(response: Any) -> dict[str, str]:
    return {".".join(str(p) for p in d["loc"][1:]): d["msg"] for d in response.json()["detail"]}


def test_weak_passwords_are_refused_naming_the_field(web: WebEnv) -> None:
    setup_world(web)
    short = web.post(
        "/api/v1/subscribers", {"username": "alice", "account": "cust", "password": "letmein300"}
    )
    assert short.status_code == 422
    assert fields(short) == {"password": "too short: at least 12 characters"}
    common = web.put("/api/v1/subscribers/alice", {"account": "cust", "password": "Password2024!"})
    assert common.status_code == 422 and "too common" in fields(common)["password"]
    login(web)
    page = post_form(
        web,
        "/subscribers",
        "/subscribers",
        {"username": "bob", "account": "cust", "password": "qwertyuiop123", "enabled": "true"},
    )
    assert page.status_code == 422
    assert 'id="e-password"' in page.text and "too common" in page.text
    assert web.get("/api/v1/subscribers").json() == []
