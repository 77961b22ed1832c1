"""Security headers on every response, and sessions that end: a new one at each login (the
one the browser had before is revoked), none left after logout, not even across a restart."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from smartswitch.web.app import create_app
from smartswitch.web.security import COOKIE

from .conftest import WebEnv
from .test_ui import login


@pytest.mark.parametrize(
    "path", ["/login", "/", "/accounts", "/static/style.css", "/health", "/metrics", "/nowhere"]
)
def test_every_response_carries_the_headers(web: WebEnv, path: str) -> None:
    login(web)
    headers = web.client.get(path, follow_redirects=False).headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in headers  # plain HTTP: no HSTS


def test_the_api_carries_them_too(web: WebEnv) -> None:
    headers = web.get("/api/v1/accounts").headers
    assert (
        headers["x-content-type-options"] == "nosniff"
        and "frame-ancestors" in headers["content-security-policy"]
    )


def test_hsts_only_over_https(web: WebEnv) -> None:
    web.node.config.cookie_secure = True
    assert web.client.get("/login").headers["strict-transport-security"].startswith("max-age=")


def test_pages_have_no_inline_script_or_style(web: WebEnv) -> None:
    """What the policy forbids must not be there: no <script> without src, no on* handler,
    no style attribute or element, no javascript: link (every template, rendered)."""
    login(web)
    for path in (
        "/",
        "/accounts",
        "/peers",
        "/tariffs",
        "/routes",
        "/subscribers",
        "/dids",
        "/cdrs",
        "/calls",
        "/cluster",
        "/security",
        "/settings",
        "/users",
        "/me",
        "/tokens",
        "/nowhere",
    ):
        html = web.client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\son[a-z]+=", html), path
        assert not re.search(r"\sstyle=|<style", html), path
        assert "javascript:" not in html, path


def test_swagger_gets_its_own_policy(web: WebEnv) -> None:
    login(web)
    docs = web.client.get("/api/docs")
    csp = docs.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in csp and "'sha256-" in csp and "unsafe-inline" not in csp


def test_login_starts_a_new_session_and_ends_the_old_one(web: WebEnv) -> None:
    login(web, "readonly")
    planted = web.client.cookies[COOKIE]
    response = login(web)  # another login in the same browser
    fresh = web.client.cookies[COOKIE]
    assert fresh != planted and COOKIE in response.headers["set-cookie"]
    assert web.client.get("/accounts").status_code == 200
    web.client.cookies.set(COOKIE, planted)
    assert web.client.get("/accounts", follow_redirects=False).status_code == 303  # to /login


def test_logout_ends_the_session_even_across_a_restart(web: WebEnv) -> None:
    login(web)
    cookie = web.client.cookies[COOKIE]
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.client.get("/").text)
    assert token
    web.client.post("/logout", data={"csrf_token": token.group(1)}, follow_redirects=False)
    web.client.cookies.set(COOKIE, cookie)  # the cookie kept by someone
    assert web.client.get("/", follow_redirects=False).status_code == 303
    # A new app on the same data directory (a restart) still refuses it.
    with TestClient(create_app(web.node)) as again:
        again.cookies.set(COOKIE, cookie)
        assert again.get("/", follow_redirects=False).status_code == 303
