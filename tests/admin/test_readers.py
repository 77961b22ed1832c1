"""One reader per entity: the same bad input through the YAML file, a web form and a JSON body
is the same issue (field path and message; the file's with its line)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from smartswitch.admin import readers
from smartswitch.admin.form_source import read_form
from smartswitch.admin.provisioning import parse_document
from smartswitch.admin.source import Given
from smartswitch.admin.writer import ChangeReport, ConfigChange, ConfigInvalid, ConfigWriter, Issue

Reader = Callable[[Given], Any]

PEER = {"name": "p", "role": "supplier", "account": "a", "address": "192.0.2.1"}

# (section, reader, the entity as YAML flow text, as JSON, as form text, the YAML line of the
# issue, its path inside the entity, its message)
CASES: list[tuple[str, Reader, str, dict[str, Any], dict[str, str], int, str, str]] = [
    (
        "accounts",
        readers.account,
        "{name: a, currency: usd}",
        {"name": "a", "currency": "usd"},
        {"name": "a", "currency": "usd"},
        2,
        "currency",
        "currency must be a 3-letter ISO 4217 code in capitals, got 'usd'",
    ),
    (
        "accounts",
        readers.account,
        '{name: a, currency: USD, balance: "1.00001"}',
        {"name": "a", "currency": "USD", "balance": "1.00001"},
        {"name": "a", "currency": "USD", "balance": "1.00001"},
        2,
        "balance",
        "1.00001 has more than 4 decimal places",
    ),
    (
        "accounts",
        readers.account,
        "{name: a}",
        {"name": "a"},
        {"name": "a", "currency": " "},
        2,
        "currency",
        "required",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1",\n     acl: ["10.0.0.0/8", "10.0.0.1/8"]}',
        {**PEER, "acl": ["10.0.0.0/8", "10.0.0.1/8"]},
        {**PEER, "acl": "10.0.0.0/8\n10.0.0.1/8"},
        3,
        "acl[1]",
        "'10.0.0.1/8' has host bits set (the network is 10.0.0.0/8)",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1",\n     acl: ["10.0.0.0/8", "10.0.0.0/8"]}',
        {**PEER, "acl": ["10.0.0.0/8", "10.0.0.0/8"]},
        {**PEER, "acl": "10.0.0.0/8, 10.0.0.0/8"},
        3,
        "acl[1]",
        "10.0.0.0/8 is listed twice",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: vendor, account: a, address: "192.0.2.1"}',
        {**PEER, "role": "vendor"},
        {**PEER, "role": "vendor"},
        2,
        "role",
        "must be one of customer, supplier, both; got 'vendor'",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1", max_calls: 0}',
        {**PEER, "max_calls": 0},
        {**PEER, "max_calls": "0"},
        2,
        "max_calls",
        "must be at least 1, got 0",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1",\n     callee_rewrite: [{match: "^(", replace: ""}]}',
        {**PEER, "callee_rewrite": [{"match": "^(", "replace": ""}]},
        {**PEER, "callee_rewrite": "^( -> "},
        3,
        "callee_rewrite[0]",
        "rewrite '^(' -> '': missing ), unterminated subpattern at position 1",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1",\n     register: {username: u, password: pw, registrar: "192.0.2.1", expires: 1}}',
        {
            **PEER,
            "register": {"username": "u", "password": "pw", "registrar": "192.0.2.1", "expires": 1},
        },
        {
            **PEER,
            "register_username": "u",
            "register_password": "pw",
            "register_registrar": "192.0.2.1",
            "register_expires": "1",
        },
        3,
        "register.expires",
        "must be at least 10, got 1",
    ),
    # The password policy (admin/passwords.py): the same words from every front door.
    (
        "subscribers",
        readers.subscriber,
        "{username: alice, account: a, password: letmein300}",
        {"username": "alice", "account": "a", "password": "letmein300"},
        {"username": "alice", "account": "a", "password": "letmein300"},
        2,
        "password",
        "too short: at least 12 characters",
    ),
    (
        "subscribers",
        readers.subscriber,
        '{username: alice, account: a, password: "Password12345!"}',
        {"username": "alice", "account": "a", "password": "Password12345!"},
        {"username": "alice", "account": "a", "password": "Password12345!"},
        2,
        "password",
        "too common or predictable (this is similar to a commonly used password; zxcvbn's "
        "lists of common passwords and words): choose a longer, less predictable one",
    ),
    (
        "peers",
        readers.peer,
        '{name: p, role: supplier, account: a, address: "192.0.2.1",\n     username: trunk7, password: trunk7trunk7trunk7}',
        {**PEER, "username": "trunk7", "password": "trunk7trunk7trunk7"},
        {**PEER, "username": "trunk7", "password": "trunk7trunk7trunk7"},
        3,
        "password",
        'too common or predictable (repeats like "abcabcabc" are only slightly harder to '
        'guess than "abc"; zxcvbn\'s lists of common passwords and words): choose a '
        "longer, less predictable one",
    ),
    (
        "routes",
        readers.route,
        '{prefix: "1", suppliers: []}',
        {"prefix": "1", "suppliers": []},
        {"prefix": "1", "suppliers": ""},
        2,
        "suppliers",
        "at least one supplier is required",
    ),
    (
        "routes",
        readers.route,
        '{prefix: "1", suppliers: [{peer: s1, priority: x}]}',
        {"prefix": "1", "suppliers": [{"peer": "s1", "priority": "x"}]},
        {"prefix": "1", "suppliers": "s1 x"},
        2,
        "suppliers[0].priority",
        "expected a whole number, got 'x'",
    ),
    (
        "subscribers",
        readers.subscriber,
        '{username: alice, account: a, allowed_cidrs: ["192.0.2.1/24"]}',
        {"username": "alice", "account": "a", "allowed_cidrs": ["192.0.2.1/24"]},
        {"username": "alice", "account": "a", "allowed_cidrs": "192.0.2.1/24"},
        2,
        "allowed_cidrs[0]",
        "not a network (CIDR) with its host bits zero: '192.0.2.1/24'",
    ),
    (
        "subscribers",
        readers.subscriber,
        '{username: alice, account: a, caller_id: "x1"}',
        {"username": "alice", "account": "a", "caller_id": "x1"},
        {"username": "alice", "account": "a", "caller_id": "x1"},
        2,
        "caller_id",
        "a prefix is digits only (at most 32), got 'x1'",
    ),
    (
        "dids",
        readers.did,
        '{number: "12a", peer: p}',
        {"number": "12a", "peer": "p"},
        {"number": "12a", "peer": "p"},
        2,
        "number",
        "a prefix is digits only (at most 32), got '12a'",
    ),
]


def _yaml_issues(section: str, entity: str) -> list[Issue]:
    text = f"{section}:\n  - " + textwrap.indent(entity, "  ").lstrip() + "\n"
    with pytest.raises(ConfigInvalid) as info:
        parse_document(text, "p.yaml")
    return list(info.value.issues)


def _form_issues(reader: Reader, data: dict[str, Any], source: str) -> list[Issue]:
    with pytest.raises(ConfigInvalid) as info:
        read_form(reader, source, data)
    return list(info.value.issues)


@pytest.mark.parametrize(
    ("section", "reader", "yaml_entity", "json", "form", "line", "path", "message"),
    CASES,
    ids=[f"{c[0]}-{c[6]}" for c in CASES],
)
def test_same_issue_from_every_front_door(
    section: str,
    reader: Reader,
    yaml_entity: str,
    json: dict[str, Any],
    form: dict[str, str],
    line: int,
    path: str,
    message: str,
) -> None:
    expected = (path, message)
    assert [(i.path, i.message) for i in _form_issues(reader, json, "api")] == [expected]
    assert [(i.path, i.message) for i in _form_issues(reader, form, "web")] == [expected]
    assert [(i.line, i.path, i.message) for i in _yaml_issues(section, yaml_entity)] == [
        (line, f"{section}[0].{path}", message)
    ]


def test_each_front_door_refuses_inexact_numbers_in_its_own_words() -> None:
    # YAML's unquoted 0.1 is read from its text; JSON's 0.1 is a binary float: refused.
    change = parse_document("accounts: [{name: a, currency: USD, balance: 0.1}]", "p.yaml")
    assert str(change.accounts[0].balance) == "0.1"
    issues = _form_issues(readers.account, {"name": "a", "currency": "USD", "balance": 0.1}, "api")
    assert [(i.path, i.message) for i in issues] == [
        ("balance", "give 0.1 as text (a JSON string) so it stays exact")
    ]
    # Unquoted digits are the text written, "0044" not octal.
    change = parse_document("routes: [{prefix: 0044, suppliers: [s]}]", "p.yaml")
    assert change.routes[0].prefix == "0044"


def _rule_issues(change: ConfigChange) -> list[tuple[str, str]]:
    writer = ConfigWriter(None, change, ChangeReport(change.file, 0))  # type: ignore[arg-type]
    writer.keep_stored_secrets({})
    writer.check_rules()
    return [(i.path, i.message) for i in writer.issues]


@pytest.mark.parametrize(
    ("section", "reader", "entity", "path", "message"),
    [
        (
            "dids",
            readers.did,
            {"number": "1"},
            "subscriber",
            "a DID goes to a subscriber or a peer (one)",
        ),
        (
            "dids",
            readers.did,
            {"number": "1", "subscriber": "s", "peer": "p"},
            "subscriber",
            "a DID goes to a subscriber or a peer (one)",
        ),
        (
            "peers",
            readers.peer,
            {"name": "p", "role": "customer", "account": "a", "acl": ["192.0.2.0/24"]},
            "tariff",
            "required for a customer (what to charge)",
        ),
        (
            "peers",
            readers.peer,
            {**PEER, "username": "u"},
            "password",
            "username and password go together",
        ),
        (
            "subscribers",
            readers.subscriber,
            {"username": "s", "account": "a", "ha1_md5": "0" * 32},
            "ha1_md5",
            "ha1_md5 and ha1_sha256 go together",
        ),
    ],
)
def test_rules_are_the_writers_whatever_the_front_door(
    section: str, reader: Reader, entity: dict[str, Any], path: str, message: str
) -> None:
    from_form = ConfigChange("api")
    getattr(from_form, section).append(read_form(reader, "api", entity))
    import json

    from_file = parse_document(f"{section}:\n  - {json.dumps(entity)}\n", "p.yaml")
    assert _rule_issues(from_form) == [(path, message)]
    assert _rule_issues(from_file) == [(f"{section}[0].{path}", message)]
