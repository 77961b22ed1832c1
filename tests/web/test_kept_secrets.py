"""A secret left empty (a page) or left out (the API) keeps the stored one: the same rule, the
writer's, behind both front doors."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from .conftest import WebEnv
from .helpers import stored_row
from .test_api_config import SUPPLIER, setup_world
from .test_ui import login, post_form

REGISTER = {"username": "sw1", "password": "reg s3cret", "registrar": "198.51.100.9:5060"}
PEER = {**SUPPLIER, "username": "trunk", "password": "trunk-s3cret-pass!", "register": REGISTER}
SECRETS = ("trunk-s3cret-pass!", "reg s3cret")
# The supplier as the peer page posts it, with a username.
FORM = {**{k: str(v) for k, v in SUPPLIER.items()}, "username": "trunk"}


def _stored(web: WebEnv) -> tuple[Any, ...]:
    return stored_row(
        web.url,
        "SELECT username, password, register_username, register_password, max_calls "
        "FROM peers WHERE name='s1'",
    )


def _through_the_page(web: WebEnv) -> Any:
    login(web)
    page = web.client.get("/peers/s1").text
    assert not any(secret in page for secret in SECRETS)  # never sent to the browser
    return post_form(
        web,
        "/peers/s1",
        "/peers",
        {
            **FORM,
            "existing": "s1",
            "password": "",
            "max_calls": "7",
            "enabled": "true",
            "register_username": "sw1",
            "register_password": "",
            "register_registrar": REGISTER["registrar"],
        },
    )


def _through_the_api(web: WebEnv) -> Any:
    register = {**REGISTER}
    del register["password"]
    body = {**SUPPLIER, "username": "trunk", "max_calls": 7, "register": register}
    response = web.put("/api/v1/peers/s1", body)
    assert response.json()["has_password"] is True
    return response


@pytest.mark.parametrize("front_door", [_through_the_page, _through_the_api])
def test_an_empty_peer_password_keeps_the_stored_secrets(web: WebEnv, front_door: Any) -> None:
    setup_world(web)
    assert web.post("/api/v1/peers", {"name": "s1", **PEER}).status_code == 201
    response = front_door(web)
    assert response.status_code in (200, 303), response.text
    assert _stored(web) == ("trunk", "trunk-s3cret-pass!", "sw1", "reg s3cret", 7)


def test_page_and_api_refuse_a_new_username_without_a_password_alike(web: WebEnv) -> None:
    setup_world(web)
    api = web.post("/api/v1/peers", {"name": "s1", **SUPPLIER, "username": "trunk"})
    assert api.status_code == 422
    assert [(d["loc"], d["msg"]) for d in api.json()["detail"]] == [
        (["body", "password"], "username and password go together")
    ]
    login(web)
    page = post_form(web, "/peers/new", "/peers", {**FORM, "name": "s1", "password": ""})
    assert page.status_code == 422 and "username and password go together" in page.text


def test_no_username_no_password(web: WebEnv) -> None:
    # The stored secret stays only while the peer keeps a username to go with it.
    setup_world(web)
    web.post("/api/v1/peers", {"name": "s1", **PEER})
    assert web.put("/api/v1/peers/s1", SUPPLIER).json()["has_password"] is False
    assert _stored(web)[:4] == (None, None, None, None)


def test_an_empty_subscriber_password_keeps_the_hashes_on_the_page_too(web: WebEnv) -> None:
    setup_world(web)
    sub = {"username": "alice", "account": "cust", "password": "phone secret 1"}
    assert web.post("/api/v1/subscribers", sub).status_code == 201
    db = sqlite3.connect(web.url.split("///", 1)[1])
    before = db.execute("SELECT ha1_md5, ha1_sha256 FROM subscribers").fetchone()
    login(web)
    saved = post_form(
        web,
        "/subscribers/alice",
        "/subscribers",
        {"existing": "alice", "account": "cust", "password": "", "max_contacts": "2"},
    )
    assert saved.status_code == 303, saved.text
    assert db.execute("SELECT ha1_md5, ha1_sha256, max_contacts FROM subscribers").fetchone() == (
        *before,
        2,
    )
