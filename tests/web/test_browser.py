"""The admin UI in a real browser (Debian's headless Chromium, driven by Playwright) against a
real billing node, with sipp placing the calls.

One story, in order, as an operator lives it: log in with the one-time admin password the node
printed at first start; create the customer peer; import the customer's rates from a CSV file;
place a call with sipp and watch its CDR appear; hang up a call in progress from the calls
page; top up the customer's balance and find it in the audit trail; restart the node in
read-only mode and see the banner naming the primary.  Screenshots of the main pages go to the
test's directory, and also to ``$SMARTSWITCH_SCREENSHOTS`` when set (``docs/screenshots``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (  # the end-to-end harness: a real node and sipp
    CALLEE_IP,
    CALLER_IP,
    SippFactory,
    StartBillingNode,
    sipp,
    start_billing_node,
    start_node,
)
from e2e.node import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
__all__ = ["sipp", "start_billing_node", "start_node"]  # fixtures used by name

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RATES_CSV = (
    "prefix,price_per_minute,connect_fee,increment,free_seconds\n"
    "1,0.0100,0,60/60,0\n"
    "1555,0.0120,0,1/1,0\n"
    "44,0.0200,0.0050,1/1,0\n"
    "4420,0.0250,0.0050,1/1,0\n"
    "33,0.0180,0,30/6,0\n"
)


def provisioning(carrier: str) -> dict[str, Any]:
    """Everything but the customer's peer and rates, which the test makes in the browser."""
    return {
        "accounts": [
            {"name": "acme", "currency": "USD", "balance": "20.00"},
            {"name": "carrier-a", "currency": "USD", "balance": "0"},
        ],
        "tariffs": [
            {"name": "retail", "rates": []},
            {"name": "buy-a", "rates": [{"prefix": "1", "price_per_minute": "0.0060"}]},
        ],
        "peers": [
            {
                "name": "carrier-a",
                "role": "supplier",
                "account": "carrier-a",
                "tariff": "buy-a",
                "address": carrier,
            }
        ],
        "routes": [{"prefix": "1", "strategy": "least_cost", "suppliers": ["carrier-a"]}],
    }


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.set_default_timeout(10_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


class Shots:
    def __init__(self, page: Any, tmp_path: Path) -> None:
        self.page = page
        self.dirs = [tmp_path / "screenshots"]
        extra = os.environ.get("SMARTSWITCH_SCREENSHOTS")
        if extra:
            self.dirs.append(Path(extra))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        first = self.dirs[0] / f"{name}.png"
        self.page.screenshot(path=str(first), full_page=True)
        for d in self.dirs[1:]:
            shutil.copy(first, d / first.name)


def test_operator_story(
    start_billing_node: StartBillingNode,
    sipp: SippFactory,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    page = browser_page
    # The Content-Security-Policy (web/security.py) must not break a page: Chromium reports
    # every refused script, style or connection on the console.
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    shot = Shots(page, tmp_path)
    carrier = sipp.uas(ip=CALLEE_IP, calls=None)
    node = start_billing_node(provisioning(SippFactory.address(carrier)))
    base = f"http://{node.http_host}:{node.http_port}"

    # The one-time admin password, printed once at first start.
    found = wait_for(
        lambda: re.search(r"one-time password (\S+)", node.log_text()), what="admin password"
    )
    password = found.group(1)
    assert node.log_text().count(password) == 1

    # -- log in (a wrong password first: the page says so)
    page.goto(f"{base}/")
    assert "/login" in page.url
    page.fill("#username", "admin")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "wrong user name or password" in page.inner_text("main")
    page.fill("#username", "admin")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert "calls in progress" in page.inner_text("main")

    # -- create the customer peer (a bad ACL first: the field says why)
    page.goto(f"{base}/peers/new")
    page.fill("#f-name", "acme-trunk")
    page.select_option("#f-role", "customer")
    page.select_option("#f-account", "acme")
    page.select_option("#f-tariff", "retail")
    page.fill("#f-acl", "127.0.0.2/8")
    page.fill("#f-max_calls", "50")
    page.click("button:has-text('Save peer')")
    assert "has host bits set" in page.inner_text(".field.invalid")
    shot("peer-form-error")
    page.fill("#f-acl", f"{CALLER_IP}/32")
    page.click("button:has-text('Save peer')")
    page.wait_for_url(re.compile(r".*/peers\?ok=.*"))
    assert "acme-trunk" in page.inner_text("table")
    shot("peers")

    # -- import the customer's rates from a CSV file
    csv_file = tmp_path / "retail.csv"
    csv_file.write_text(RATES_CSV)
    page.goto(f"{base}/tariffs/retail")
    page.set_input_files("input[type=file]", str(csv_file))
    page.click("button:has-text('Import')")
    page.wait_for_url(re.compile(r".*/tariffs/retail\?ok=imported.*"))
    assert "imported 5 rates" in page.inner_text(".flash")
    assert "1555" in page.inner_text("#rates")
    shot("tariff")

    # -- a call through the node, and its CDR in the page
    node.wait_config_applied()  # what the pages changed, loaded by the node
    result = sipp.uac(node.sip_address, ip=CALLER_IP, calls=1, duration_ms=1500)
    assert result.returncode == 0, result.describe()
    page.goto(f"{base}/cdrs")

    def cdr_row() -> bool:
        page.reload()
        return "acme-trunk" in page.inner_text("#cdr-table")

    wait_for(cdr_row, what="the CDR in the page")
    row = page.inner_text("#cdr-table tbody tr")
    assert "15551234567" in row and "carrier-a" in row and "200" in row
    page.fill("input[name=sip_code]", "20")
    page.click("button:has-text('Filter')")
    assert "must be at least 100" in page.inner_text("#cdr-filters")
    page.goto(f"{base}/cdrs?sip_code=200")
    shot("cdrs")

    # -- a call in progress, hung up from the calls page
    long_call = sipp.uac_background(
        node.sip_address, ip=CALLER_IP, calls=1, duration_ms=60_000, timeout_s=60
    )
    page.goto(f"{base}/calls")
    wait_for(lambda: "Hang up" in page.inner_text("main"), what="the call in progress")
    assert "15551234567" in page.inner_text("#calls")  # the callee, read from the live call
    page.goto(f"{base}/")
    wait_for(lambda: page.inner_text("#stat-in-progress").strip() == "1", what="the dashboard")
    shot("dashboard")
    page.goto(f"{base}/calls")
    shot("calls")
    page.click("button:has-text('Hang up')")
    page.wait_for_url(re.compile(r".*/calls\?ok=call\+hung\+up"))
    long_call.stop()
    page.goto(f"{base}/cdrs")
    wait_for(lambda: (page.reload(), "switch" in page.inner_text("#cdr-table"))[1], what="CDR")

    # -- top up the customer; the audit trail says who and why
    page.goto(f"{base}/accounts/acme")
    page.fill("#f-amount", "-12.34")
    page.fill("#f-note", "oops")
    page.click("button:has-text('Record')")
    assert "a top-up must be positive" in page.inner_text(".field.invalid")
    page.fill("#f-amount", "12.34")
    page.fill("#f-note", "bank transfer 2026-118")
    page.click("button:has-text('Record')")
    page.wait_for_url(re.compile(r".*/accounts/acme\?ok=top-up.*"))
    audit = page.inner_text("#audit")
    assert "bank transfer 2026-118" in audit and "12.3400" in audit and "admin" in audit
    shot("account")
    page.goto(f"{base}/accounts")
    shot("accounts")
    page.goto(f"{base}/routes")
    shot("routes")
    page.goto(f"{base}/subscribers")
    page.fill("#f-username", "alice")
    page.fill("#f-password", "phone password 1")
    page.select_option("#f-account", "acme")
    page.select_option("#f-tariff", "retail")
    page.fill("#f-caller_id", "15557000001")
    page.click("button:has-text('Save subscriber')")
    page.wait_for_url(re.compile(r".*/subscribers\?ok=.*"))
    assert "alice" in page.inner_text("#subscribers")
    assert "not registered" in page.inner_text("#subscribers")
    shot("subscribers")
    page.goto(f"{base}/dids")
    page.fill("#f-number", "15557000001")
    page.select_option("#f-subscriber", "alice")
    page.click("button:has-text('Save DID')")
    page.wait_for_url(re.compile(r".*/dids\?ok=.*"))
    assert "alice" in page.inner_text("#dids")
    shot("dids")
    page.goto(f"{base}/settings")
    shot("settings")

    # -- the same node in read-only mode (as a replica): a banner names the primary
    node.stop_cleanly()
    node.spec.config.update(read_only=True, read_only_primary="node1 (10.0.0.1)")
    node.start()
    page.goto(f"{base}/accounts/acme")
    banner = page.inner_text(".banner.readonly")
    assert "node1 (10.0.0.1)" in banner
    assert page.locator("button:has-text('Record')").count() == 0  # no top-up form
    page.goto(f"{base}/peers/acme-trunk")
    assert page.locator("button:has-text('Save peer')").count() == 0
    assert page.locator("fieldset[disabled]").count() == 1
    shot("read-only")
    sipp.stop_all()
    assert refused == [], refused
