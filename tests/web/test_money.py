"""Money across nodes on the web side: an account's reservation slice through the API and the
page, and the money each node of the cluster holds of it."""

from __future__ import annotations

from decimal import Decimal

from smartswitch.web.ports import NodeMoney

from .conftest import WebEnv
from .helpers import stored_row
from .test_ui import login, post_form


def test_the_slice_through_the_api(web: WebEnv) -> None:
    created = web.post(
        "/api/v1/accounts", {"name": "acme", "currency": "USD", "reserve_seconds": 30}
    )
    assert created.status_code == 201, created.text
    assert created.json()["reserve_seconds"] == 30
    assert stored_row(web.url, "SELECT reserve_seconds FROM accounts WHERE name='acme'") == (30,)
    cleared = web.put("/api/v1/accounts/acme", {"currency": "USD"})
    assert cleared.json()["changed"] is True and cleared.json()["reserve_seconds"] is None
    for bad in (0, -5, 86_401, "x"):
        response = web.put("/api/v1/accounts/acme", {"currency": "USD", "reserve_seconds": bad})
        assert response.status_code == 422, (bad, response.text)


def test_the_money_held_on_each_node(web: WebEnv) -> None:
    web.post("/api/v1/accounts", {"name": "acme", "currency": "USD"})
    account_id = stored_row(web.url, "SELECT id FROM accounts WHERE name='acme'")[0]
    web.node.node_money[account_id] = [
        NodeMoney("node1", Decimal("0.3000"), Decimal("0.0100"), True, True),
        NodeMoney("node2", Decimal("0.6000"), Decimal("0.0000"), False, False),
    ]
    held = web.get("/api/v1/accounts/acme").json()["held_by_node"]
    assert held == [
        {
            "node": "node1",
            "reserved": "0.3000",
            "unconfirmed": "0.0100",
            "live": True,
            "this_node": True,
        },
        {
            "node": "node2",
            "reserved": "0.6000",
            "unconfirmed": "0.0000",
            "live": False,
            "this_node": False,
        },
    ]
    login(web)
    page = web.client.get("/accounts/acme").text
    assert 'id="holdings"' in page and "0.6000" in page and "not heard: last figures" in page
    saved = post_form(
        web, "/accounts/acme", "/accounts/acme", {"credit_limit": "0", "reserve_seconds": "45"}
    )
    assert saved.status_code == 303
    assert stored_row(web.url, "SELECT reserve_seconds FROM accounts WHERE name='acme'") == (45,)
    assert 'value="45"' in web.client.get("/accounts/acme").text
