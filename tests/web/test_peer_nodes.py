"""A peer's nodes through the API and the pages: attachment and per-node registration
accounts read and kept like every field and secret, the addresses of the peer's nodes, and
each node's registration state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from smartswitch.registrar.guard import GuardSettings, SourceGuard
from smartswitch.store.schema import NodeRow

from .conftest import WebEnv
from .fakes import FakeRegistrar
from .helpers import stored_row
from .test_api_config import SUPPLIER, setup_world
from .test_api_registrar import fields
from .test_ui import login, post_form

NODE_PASSWORDS = ("pw-node-1 s3cret", "pw-node-2 s3cret")
REGISTER = {
    "registrar": "198.51.100.9:5060",
    "nodes": [
        {"node": "n1", "username": "trunk-n1", "password": NODE_PASSWORDS[0]},
        {"node": "n2", "username": "trunk-n2", "password": NODE_PASSWORDS[1]},
    ],
}
PEER = {**SUPPLIER, "nodes": ["n2", "n1"], "register": REGISTER}


def _nodes(web: WebEnv) -> None:
    """Three nodes registered in the cluster's table, as nodes do when they start."""

    async def insert() -> None:
        sessions = web.node.sessions
        assert sessions is not None
        async with sessions() as session, session.begin():
            for n, listen in ((1, "0.0.0.0:5060"), (2, "10.1.0.12:5070"), (3, "10.1.0.13:5060")):
                session.add(
                    NodeRow(
                        name=f"n{n}",
                        dedicated_ip=f"10.1.0.1{n}",
                        sip_address=listen,
                        http_address="127.0.0.1:1",  # nobody: its status is unreachable
                        shared_ip="10.1.0.10",
                        db_scheme="replication",
                        registered_at=datetime.now(UTC),
                    )
                )

    asyncio.run(insert())


def _stored(web: WebEnv) -> tuple[Any, ...]:
    return stored_row(web.url, "SELECT nodes, register_nodes FROM peers WHERE name='s1'")


def test_api_nodes_and_per_node_accounts_without_their_passwords(web: WebEnv) -> None:
    setup_world(web)
    _nodes(web)
    created = web.post("/api/v1/peers", {"name": "s1", **PEER})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["nodes"] == ["n1", "n2"]
    assert body["register"]["username"] is None
    assert body["register"]["nodes"] == [
        {"node": "n1", "username": "trunk-n1"},
        {"node": "n2", "username": "trunk-n2"},
    ]
    got = web.get("/api/v1/peers/s1", role="read-only")
    assert not any(secret in got.text for secret in NODE_PASSWORDS)
    assert got.json()["interconnection"] == [
        {"node": "n1", "dedicated_ip": "10.1.0.11", "address": "10.1.0.11:5060"},
        {"node": "n2", "dedicated_ip": "10.1.0.12", "address": "10.1.0.12:5070"},
    ]
    # Left out, each node's password is kept; a new username keeps it too.
    accounts = [{"node": "n1", "username": "trunk-n1"}, {"node": "n2", "username": "t2"}]
    put = web.put("/api/v1/peers/s1", {**PEER, "register": {**REGISTER, "nodes": accounts}})
    assert put.status_code == 200, put.text
    assert '"password": "pw-node-2 s3cret"' in _stored(web)[1]
    assert '"username": "t2"' in _stored(web)[1]
    # Errors name their field.
    bad = web.put("/api/v1/peers/s1", {**PEER, "nodes": ["n1", "n 2"]})
    assert bad.status_code == 422 and fields(bad) == ["nodes.1"], bad.text
    missing = web.put("/api/v1/peers/s1", {**PEER, "nodes": ["n1", "n2", "n3"]})
    assert missing.status_code == 422 and fields(missing) == ["register.nodes"]
    assert "no account for node 'n3'" in missing.text
    # Attached to every node: its interconnection lists them all.
    everywhere = {**SUPPLIER, "register": {"registrar": "h", "username": "u", "password": "p"}}
    assert web.post("/api/v1/peers", {"name": "s2", **everywhere}).status_code == 201
    got = web.get("/api/v1/peers/s2").json()
    assert got["nodes"] == []
    assert [a["node"] for a in got["interconnection"]] == ["n1", "n2", "n3", "test1"]


def test_peer_page_shows_its_nodes_addresses_and_keeps_each_nodes_password(web: WebEnv) -> None:
    setup_world(web)
    _nodes(web)
    assert web.post("/api/v1/peers", {"name": "s1", **PEER}).status_code == 201
    login(web)
    page = web.client.get("/peers/s1").text
    assert not any(secret in page for secret in NODE_PASSWORDS)  # never sent to the browser
    assert "10.1.0.11:5060" in page and "10.1.0.12:5070" in page
    assert "10.1.0.13" not in page  # n3: not one of its nodes
    assert 'value="n1, n2"' in page
    assert 'name="register_node_0" value="n1"' in page
    assert 'name="register_node_0_username" value="trunk-n1"' in page
    # The form as the browser posts it: the rows of every node, passwords left empty, one
    # username changed; a row without a username is no account.
    form: dict[str, str] = {
        **{k: str(v) for k, v in SUPPLIER.items()},
        "existing": "s1",
        "enabled": "true",
        "nodes": "n1, n2",
        "register_registrar": "198.51.100.9:5060",  # REGISTER's
        "register_node_0": "n1",
        "register_node_0_username": "trunk-n1",
        "register_node_0_password": "",
        "register_node_1": "n2",
        "register_node_1_username": "trunk-n2b",
        "register_node_1_password": "",
        "register_node_2": "n3",
        "register_node_2_username": "",
        "register_node_2_password": "",
        "register_node_3": "",
        "register_node_3_username": "",
        "register_node_3_password": "",
    }
    saved = post_form(web, "/peers/s1", "/peers", form)
    assert saved.status_code == 303, saved.text
    stored = _stored(web)[1]
    assert all(secret in stored for secret in NODE_PASSWORDS) and "trunk-n2b" in stored
    # An account for a node the peer is not attached to is refused, named.
    refused = post_form(
        web,
        "/peers/s1",
        "/peers",
        {**form, "register_node_2_username": "trunk-n3", "register_node_2_password": "x"},
    )
    assert refused.status_code == 422
    assert "the peer is not attached to node &#39;n3&#39;" in refused.text
    assert 'value="x"' not in refused.text  # a password typed is not shown back either
    # A peer on every node: every node's address, and this node's own from its config.
    web.node.config.dedicated_ip = "10.1.0.99"
    web.node.config.sip_listen = "0.0.0.0:5080"
    everywhere = {**SUPPLIER, "register": {"registrar": "h", "username": "u", "password": "p"}}
    assert web.post("/api/v1/peers", {"name": "s2", **everywhere}).status_code == 201
    page = web.client.get("/peers/s2").text
    for address in ("10.1.0.11:5060", "10.1.0.12:5070", "10.1.0.13:5060", "10.1.0.99:5080"):
        assert address in page
    assert ">all<" in web.client.get("/peers").text


def test_unknown_node_names_are_flagged_on_the_page(web: WebEnv) -> None:
    setup_world(web)
    _nodes(web)
    body = {"name": "s1", **SUPPLIER, "nodes": ["n1", "nq"]}
    assert web.post("/api/v1/peers", body).status_code == 201
    login(web)
    page = web.client.get("/peers/s1").text
    assert "not a node of this cluster" in page


OUTBOUND = [
    {
        "peer": "s1",
        "username": "trunk-test1",
        "state": "registered",
        "registered_for": 590.4,
        "last_status": 200,
        "last_reason": "OK",
    }
]


def test_each_nodes_registration_state(web: WebEnv) -> None:
    setup_world(web)
    _nodes(web)
    accounts = [*REGISTER["nodes"], {"node": "test1", "username": "trunk-test1", "password": "p"}]
    body = {"name": "s1", **PEER, "nodes": ["n1", "test1"]}
    body["register"] = {**REGISTER, "nodes": [accounts[0], accounts[2]]}
    assert web.post("/api/v1/peers", body).status_code == 201, body
    web.node.registrar = FakeRegistrar(SourceGuard(GuardSettings()), outbound_states=OUTBOUND)
    login(web)
    # A single node: its own state only.
    page = web.client.get("/peers/s1").text
    assert "peer-registrations" in page and "trunk-test1" in page and "registered" in page
    assert "590" in page and "200 OK" in page
    # A cluster: every node the peer is attached to, from its status; n1 cannot be reached.
    web.node.config.db_scheme = "replication"
    web.node.config.cluster_secret = "s3cret"
    page = web.client.get("/peers/s1").text
    start = page.index('id="peer-registrations"')
    table = page[start : page.index("</table>", start)]
    assert table.count("<tr>") == 3  # the header, n1, test1
    assert "trunk-n1" in table and "unreachable" in table and "registered" in table
