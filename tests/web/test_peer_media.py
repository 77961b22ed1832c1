"""A peer's media settings and an account's recording through the API and the page: stored,
read back, bad values named."""

from __future__ import annotations

from typing import Any

from .conftest import WebEnv
from .helpers import stored_row
from .test_api_config import CUSTOMER, SUPPLIER, setup_world
from .test_ui import login, post_form


def _messages(response: Any) -> dict[str, str]:
    return {".".join(str(p) for p in d["loc"][1:]): d["msg"] for d in response.json()["detail"]}


def test_media_settings_through_the_api(web: WebEnv) -> None:
    setup_world(web)
    assert web.post("/api/v1/peers", {"name": "c1", **CUSTOMER}).json()["media"] == "direct"
    created = web.post(
        "/api/v1/peers",
        {
            "name": "s1",
            **SUPPLIER,
            "media": "relay",
            "codecs": ["PCMA", "telephone-event"],
            "record": True,
            "direct_fallback": True,
        },
    )
    assert created.status_code == 201, created.text
    peer = web.get("/api/v1/peers/s1").json()
    assert (peer["media"], peer["codecs"], peer["record"], peer["direct_fallback"]) == (
        "relay",
        ["PCMA", "telephone-event"],
        True,
        True,
    )
    row = stored_row(
        web.url, "SELECT media_mode, media_codecs, media_record FROM peers WHERE name='s1'"
    )
    assert row[0] == "relay" and "PCMA" in row[1] and row[2] == 1


def test_bad_media_settings_are_named(web: WebEnv) -> None:
    setup_world(web)
    bad = web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "codecs": ["PCMA", "all", "G 729"]})
    assert bad.status_code == 422
    messages = _messages(bad)
    assert "not a codec name" in messages["codecs.1"] and "not a codec name" in messages["codecs.2"]
    twice = web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "codecs": ["PCMA", "PCMA"]})
    assert twice.status_code == 422 and "listed twice" in _messages(twice)["codecs.1"]
    mode = web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "media": "proxy"})
    assert mode.status_code == 422


def test_media_settings_through_the_page(web: WebEnv) -> None:
    setup_world(web)
    web.client.post("/login", data={"username": "admin", "password": "correct horse battery"})
    form = web.client.get("/peers/new").text
    assert 'name="media"' in form and 'name="codecs"' in form and 'name="record"' in form
    assert (
        web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "media": "relay"}).status_code == 201
    )
    page = web.client.get("/peers/s1").text
    assert '<option value="relay" selected' in page.replace("  ", " ")


def test_account_recording_through_the_api_and_the_page(web: WebEnv) -> None:
    created = web.post("/api/v1/accounts", {"name": "acme", "currency": "USD", "record": True})
    assert created.status_code == 201, created.text
    assert created.json()["record"] is True
    assert stored_row(web.url, "SELECT media_record FROM accounts WHERE name='acme'") == (1,)
    cleared = web.put("/api/v1/accounts/acme", {"currency": "USD", "record": False})
    assert cleared.json()["changed"] is True and cleared.json()["record"] is False
    assert (
        web.post(
            "/api/v1/accounts", {"name": "bad", "currency": "USD", "record": "often"}
        ).status_code
        == 422
    )

    login(web)
    page = web.client.get("/accounts/acme").text
    assert 'name="record"' in page and "Record relayed calls" in page
    saved = post_form(
        web, "/accounts/acme", "/accounts/acme", {"credit_limit": "0", "record": "on"}
    )
    assert saved.status_code == 303
    assert stored_row(web.url, "SELECT media_record FROM accounts WHERE name='acme'") == (1,)
    assert 'name="record" value="true" checked' in web.client.get("/accounts/acme").text
    post_form(web, "/accounts/acme", "/accounts/acme", {"credit_limit": "0"})  # unticked
    assert stored_row(web.url, "SELECT media_record FROM accounts WHERE name='acme'") == (0,)
