"""Peers attached to nodes, and a registering supplier's per-node accounts: read alike from
every front door, the writer's rules, the secrets kept, the snapshot the nodes load."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.operations import Admin
from smartswitch.admin.provisioning import ProvisioningError, parse_document, provision_text
from smartswitch.admin.views import NodeView, peer_addresses
from smartswitch.admin.writer import ChangeReport, ConfigChange, ConfigWriter
from smartswitch.model.config import NodeAccount, Peer, PeerRole, SupplierRegistration
from smartswitch.store.database import session_factory
from smartswitch.store.schema import NodeRow
from smartswitch.store.snapshot import load_snapshot
from store.helpers import run_with_engine

SUPPLIER = {"name": "s", "role": "supplier", "account": "a", "address": "192.0.2.1"}

BASE = """
accounts: [{name: a, currency: USD}]
peers:
"""


def _yaml_issues(entity: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ProvisioningError) as info:
        parse_document(f"peers:\n  - {entity}\n", "p.yaml")
    return [(i.line, i.path, i.message) for i in info.value.issues]


def _form_issues(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ProvisioningError) as info:
        read_form(readers.peer, "web", data)
    return [(i.path, i.message) for i in info.value.issues]


@pytest.mark.parametrize(
    ("yaml_entity", "json_body", "form", "path", "message"),
    [
        (
            '{name: s, role: supplier, account: a, address: "192.0.2.1", nodes: [n1, "n 2"]}',
            {**SUPPLIER, "nodes": ["n1", "n 2"]},
            {**SUPPLIER, "nodes": "n1\nn 2"},
            "nodes[1]",
            "'n 2' is not a valid name (letters, digits and . _ @ + -, at most 64 characters, "
            "starting with a letter or digit)",
        ),
        (
            '{name: s, role: supplier, account: a, address: "192.0.2.1", nodes: [n1, n1]}',
            {**SUPPLIER, "nodes": ["n1", "n1"]},
            {**SUPPLIER, "nodes": "n1, n1"},
            "nodes[1]",
            "n1 is listed twice",
        ),
        (
            '{name: s, role: supplier, account: a, address: "192.0.2.1",'
            " register: {registrar: h, nodes: [{node: n1}]}}",
            {**SUPPLIER, "register": {"registrar": "h", "nodes": [{"node": "n1"}]}},
            {**SUPPLIER, "register_registrar": "h", "register_nodes": [{"node": "n1"}]},
            "register.nodes[0].username",
            "required",
        ),
        (
            '{name: s, role: supplier, account: a, address: "192.0.2.1",'
            " register: {registrar: h, nodes: [{node: n1, username: u, port: 1}]}}",
            {
                **SUPPLIER,
                "register": {
                    "registrar": "h",
                    "nodes": [{"node": "n1", "username": "u", "port": "1"}],
                },
            },
            None,  # forms read known fields only; the API's body model refuses the others
            "register.nodes[0].port",
            "unknown field (expected one of node, username, password)",
        ),
    ],
    ids=["bad-node-name", "node-twice", "account-without-username", "unknown-account-field"],
)
def test_the_same_issue_from_every_front_door(
    yaml_entity: str,
    json_body: dict[str, Any],
    form: dict[str, Any] | None,
    path: str,
    message: str,
) -> None:
    issues = _yaml_issues(yaml_entity)
    assert [(p, m) for _line, p, m in issues] == [(f"peers[0].{path}", message)]
    assert issues[0][0] == 2  # at its line
    if form is not None:
        assert _form_issues(form) == [(path, message)]
        assert _form_issues(json_body) == [(path, message)]


def test_a_node_account_twice_is_named_at_its_line() -> None:
    text = textwrap.dedent(
        """
        peers:
          - name: s
            role: supplier
            account: a
            address: h
            register:
              registrar: h
              nodes:
                - {node: n1, username: u1}
                - {node: n1, username: u2}
        """
    )
    with pytest.raises(ProvisioningError) as info:
        parse_document(text, "p.yaml")
    assert [str(i) for i in info.value.issues] == [
        "p.yaml:11: peers[0].register.nodes[1].node: node 'n1' is listed twice (first on line 10)"
    ]


def _rules(entity: dict[str, Any]) -> list[tuple[str, str]]:
    """The writer's rules about one peer (no database: every secret is new)."""
    change = ConfigChange("api")
    change.peers.append(read_form(readers.peer, "api", entity))
    writer = ConfigWriter(None, change, ChangeReport("api", 0))  # type: ignore[arg-type]
    writer.keep_stored_secrets({})
    writer.check_rules()
    return [(i.path, i.message) for i in writer.issues]


def _register(**fields: Any) -> dict[str, Any]:
    return {"registrar": "192.0.2.9", **fields}


def _account(node: str, password: str | None = "pw") -> dict[str, Any]:
    account = {"node": node, "username": f"u-{node}"}
    return account if password is None else {**account, "password": password}


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        # Every node has its own account, or there is a default: fine.
        ({**SUPPLIER, "register": _register(username="u", password="p")}, []),
        (
            {
                **SUPPLIER,
                "nodes": ["n1", "n2"],
                "register": _register(nodes=[_account("n1"), _account("n2")]),
            },
            [],
        ),
        (
            {
                **SUPPLIER,
                "register": _register(username="u", password="p", nodes=[_account("n1")]),
            },
            [],
        ),
        # Attached to every node, no default account: some node would have none.
        (
            {**SUPPLIER, "register": _register(nodes=[_account("n1")])},
            [
                (
                    "register.username",
                    "required for a peer attached to every node (or attach the peer to the "
                    "nodes that have their own account)",
                )
            ],
        ),
        (
            {
                **SUPPLIER,
                "nodes": ["n1", "n2", "n3"],
                "register": _register(nodes=[_account("n1")]),
            },
            [
                (
                    "register.nodes",
                    "no account for node 'n2', 'n3': give each node of the peer its own, or a "
                    "default username and password",
                )
            ],
        ),
        (
            {
                **SUPPLIER,
                "nodes": ["n1"],
                "register": _register(username="u", password="p", nodes=[_account("n4")]),
            },
            [
                (
                    "register.nodes[0].node",
                    "the peer is not attached to node 'n4' (its nodes: n1)",
                )
            ],
        ),
        (
            {
                **SUPPLIER,
                "nodes": ["n1"],
                "register": _register(nodes=[_account("n1", password=None)]),
            },
            [("register.nodes[0].password", "required")],
        ),
        (
            {**SUPPLIER, "register": _register(username="u")},
            [("register.password", "required")],
        ),
        (
            {
                **SUPPLIER,
                "nodes": ["n1"],
                "register": _register(password="p", nodes=[_account("n1")]),
            },
            [("register.username", "username and password go together")],
        ),
    ],
)
def test_each_node_of_the_peer_has_one_account(
    entity: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert _rules(entity) == expected


def test_the_writers_rules_at_the_lines_of_a_file(db_url: str) -> None:
    text = BASE + textwrap.indent(
        textwrap.dedent(
            """
            - name: s
              role: supplier
              account: a
              address: h
              nodes: [n1, n2]
              register:
                registrar: h
                nodes:
                  - {node: n1, username: u1}
                  - {node: n3, username: u3, password: p3}
            """
        ),
        "  ",
    )

    async def scenario(engine: AsyncEngine) -> list[str]:
        with pytest.raises(ProvisioningError) as info:
            await provision_text(engine, text, "p.yaml")
        return [str(i) for i in info.value.issues]

    assert run_with_engine(db_url, scenario) == [
        "p.yaml:11: peers[0].register.nodes: no account for node 'n2': give each node of the "
        "peer its own, or a default username and password",
        "p.yaml:13: peers[0].register.nodes[0].password: required",
        "p.yaml:14: peers[0].register.nodes[1].node: the peer is not attached to node 'n3' "
        "(its nodes: n1, n2)",
    ]


def _peer_yaml(nodes: list[str], accounts: list[dict[str, str]], default: str = "") -> str:
    register: dict[str, Any] = {"registrar": "192.0.2.9:5070", "expires": 600}
    if default:
        register.update(username=default, password=f"{default}-pw")
    if accounts:
        register["nodes"] = accounts
    peer = {**SUPPLIER, "address": "192.0.2.9", "register": register}
    if nodes:
        peer["nodes"] = nodes
    return BASE + f"  - {json.dumps(peer)}\n"


async def _peer(engine: AsyncEngine) -> Peer:
    async with session_factory(engine)() as session:
        snapshot = await load_snapshot(session)
    (peer,) = snapshot.peers.values()
    return peer


def test_per_node_passwords_are_kept_like_every_secret(db_url: str) -> None:
    accounts = [
        {"node": "n2", "username": "u2", "password": "pw2"},
        {"node": "n1", "username": "u1", "password": "pw1"},
    ]
    without = [{"node": "n1", "username": "u1"}, {"node": "n2", "username": "u2-new"}]

    async def scenario(engine: AsyncEngine) -> None:
        first = await provision_text(engine, _peer_yaml(["n2", "n1"], accounts))
        assert first.created["peers"] == ["s"]
        peer = await _peer(engine)
        assert peer.nodes == frozenset({"n1", "n2"})
        assert peer.register == SupplierRegistration(
            username="",
            password="",
            registrar="192.0.2.9:5070",
            expires=600,
            nodes=(NodeAccount("n1", "u1", "pw1"), NodeAccount("n2", "u2", "pw2")),
        )
        # The same accounts in another order, and the passwords left out: nothing changes.
        again = await provision_text(engine, _peer_yaml(["n1", "n2"], accounts[::-1]))
        assert again.unchanged["peers"] == ["s"]
        kept = await provision_text(engine, _peer_yaml(["n1", "n2"], without[:1] + accounts[:1]))
        assert kept.unchanged["peers"] == ["s"]
        # A new username keeps its node's password (as the default account's does).
        await provision_text(engine, _peer_yaml(["n1", "n2"], without))
        peer = await _peer(engine)
        assert peer.register is not None
        assert peer.register.account("n1") == ("u1", "pw1")
        assert peer.register.account("n2") == ("u2-new", "pw2")
        assert peer.register.account("n3") is None  # no default account: n3 does not register
        # An account removed is forgotten: given again, it needs its password.
        await provision_text(engine, _peer_yaml([], without[:1], default="d"))
        peer = await _peer(engine)
        assert peer.nodes == frozenset() and peer.attached("n9")
        assert peer.register is not None and peer.register.account("n2") == ("d", "d-pw")
        with pytest.raises(ProvisioningError, match=r"register.nodes\[1\].password: required"):
            await provision_text(engine, _peer_yaml([], without, default="d"))

    run_with_engine(db_url, scenario)


def test_peers_attach_to_nodes_and_say_where_those_nodes_are(db_url: str) -> None:
    text = (
        BASE
        + f"  - {json.dumps({**SUPPLIER, 'nodes': ['n1', 'n3', 'typo']})}\n"
        + f"  - {json.dumps({**SUPPLIER, 'name': 'everywhere'})}\n"
    )

    async def scenario(engine: AsyncEngine) -> None:
        await provision_text(engine, text)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            for name, ip, listen in [
                ("n1", "10.0.0.11", "0.0.0.0:5060"),
                ("n2", "10.0.0.12", "10.0.0.12:5070"),
                ("n3", "", "10.0.0.13:5060"),
            ]:
                session.add(
                    NodeRow(
                        name=name,
                        dedicated_ip=ip,
                        sip_address=listen,
                        http_address="",
                        shared_ip="10.0.0.10",
                        db_scheme="replication",
                        registered_at=datetime.now(UTC),
                    )
                )
        admin = Admin(sessions)
        nodes = await admin.list_nodes()
        assert [n.name for n in nodes] == ["n1", "n2", "n3"]
        some = await admin.get_peer("s")
        assert some.nodes == ("n1", "n3", "typo")
        assert [(a.node, a.signalling, a.known) for a in peer_addresses(some, nodes)] == [
            ("n1", "10.0.0.11:5060", True),
            ("n3", "10.0.0.13:5060", True),
            ("typo", "", False),
        ]
        everywhere = await admin.get_peer("everywhere")
        assert everywhere.nodes == () and everywhere.attached("n2")
        assert [a.signalling for a in peer_addresses(everywhere, nodes)] == [
            "10.0.0.11:5060",
            "10.0.0.12:5070",
            "10.0.0.13:5060",
        ]

    run_with_engine(db_url, scenario)


def test_node_view_addresses() -> None:
    assert NodeView("n", "2001:db8::1", "[::]:5060", "").signalling == "[2001:db8::1]:5060"
    assert NodeView("n", "", "0.0.0.0:5060", "").signalling == ""


def test_attachment() -> None:
    peer = Peer(1, "p", PeerRole.SUPPLIER, 1, None, nodes=frozenset({"n1"}))
    assert peer.attached("n1") and not peer.attached("n2")
    assert Peer(2, "q", PeerRole.CUSTOMER, 1, None).attached("anything")


def test_no_per_node_password_in_a_repr() -> None:
    spec = read_form(
        readers.peer,
        "api",
        {
            **SUPPLIER,
            "nodes": ["n1"],
            "register": _register(nodes=[_account("n1", "node-s3cret")]),
        },
    )
    assert "node-s3cret" not in repr(spec)
    assert "node-s3cret" not in repr(NodeAccount("n1", "u", "node-s3cret"))
