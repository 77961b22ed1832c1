"""Configuration changes for the registrar: subscribers, DIDs, and the peers' registrar fields.

The part of :class:`~smartswitch.admin.writer.ConfigWriter`'s work that concerns the
registrar, kept here so the writer only calls in: :func:`validate` (rules that need the
database, run with the writer's other checks, before anything is written) and :func:`apply`
(the upserts, after the peers exist). Front ends (provisioning, API, UI) fill
:class:`SubscriberSpec` / :class:`DidSpec` and the peers' ``deliver_dids`` / ``register``.

Passwords: a subscriber's password is turned into HA1 for MD5 and SHA-256 with the change's
``realm`` (the node's ``sip_realm``) and never stored. Given already hashed (``ha1_md5`` and
``ha1_sha256``), the hashes are taken as they are, for that realm. Left out on an existing
subscriber, the stored hashes stay (a file need not hold the passwords once set).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from smartswitch.admin.audit_log import snapshot
from smartswitch.model.config import PeerRole
from smartswitch.sip.digest import compute_ha1
from smartswitch.store.schema import AccountRow, DidRow, PeerRow, SubscriberRow, TariffRow

if TYPE_CHECKING:
    from smartswitch.admin.writer import ConfigWriter, PeerSpec, Ref

__all__ = [
    "DidSpec",
    "NodeAccountSpec",
    "RegisterSpec",
    "SubscriberSpec",
    "apply",
    "did_rules",
    "parse_ha1",
    "peer_rules",
    "register_columns",
    "register_rules",
    "subscriber_rules",
    "validate",
]

_HEX = re.compile(r"^[0-9a-fA-F]+$")
DEFAULT_MAX_CONTACTS = 5


@dataclass(slots=True)
class NodeAccountSpec:
    """One node's own account in a peer's ``register`` block."""

    node: str
    username: str
    password: str | None = field(repr=False)  # None: keep the stored one (of this node)
    line: int | None = None
    path: str = "register.nodes[0]"


@dataclass(slots=True)
class RegisterSpec:
    """A peer's ``register`` block: the switch registers with this supplier, each node once,
    with its own account in ``nodes`` or else the default ``username``."""

    username: str | None  # the default account; None: only the nodes in ``nodes`` register
    password: str | None = field(repr=False)  # None: keep the stored one
    registrar: str  # host, host:port, [v6]:port
    expires: int = 3600
    line: int | None = None
    path: str = "register"
    nodes: list[NodeAccountSpec] = field(default_factory=list)


@dataclass(slots=True)
class SubscriberSpec:
    line: int | None
    path: str
    username: str
    account: Ref
    tariff: Ref | None
    password: str | None = field(repr=False)  # None: keep the stored hashes
    ha1_md5: str | None = field(repr=False)
    ha1_sha256: str | None = field(repr=False)
    allowed_cidrs: list[str]
    max_contacts: int
    max_calls: int | None
    caller_id: str | None
    enabled: bool


@dataclass(slots=True)
class DidSpec:
    line: int | None
    path: str
    number: str
    subscriber: Ref | None
    peer: Ref | None
    enabled: bool


def parse_ha1(text: str, algorithm: str) -> str:
    """A stored HA1 given as hex: 32 digits for MD5, 64 for SHA-256."""
    size = 32 if algorithm == "MD5" else 64
    if len(text) != size or not _HEX.match(text):
        raise ValueError(f"expected {size} hexadecimal digits (the {algorithm} HA1)")
    return text.lower()


def peer_rules(spec: PeerSpec) -> list[tuple[str, str]]:
    """The registrar's rules about one peer alone, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if spec.deliver_dids and not spec.acl:
        problems.append(("acl", "a peer that delivers DIDs is recognised by its acl"))
    if spec.register is not None and spec.role not in (PeerRole.SUPPLIER, PeerRole.BOTH):
        problems.append(("register", "only a supplier (role supplier or both) is registered with"))
    return problems


def register_rules(spec: PeerSpec) -> list[tuple[int | None, str, str]]:
    """What a peer's ``register`` block must be, its secrets as they will be (stored ones
    kept), as (line, field path, message): each node that the peer is attached to needs an
    account, its own or the default; a per-node account names a node the peer is attached
    to; every account has its password."""
    register = spec.register
    if register is None:
        return []
    here = register.path
    problems: list[tuple[int | None, str, str]] = []
    if register.username is not None and register.password is None:
        problems.append((register.line, f"{here}.password", "required"))
    if register.username is None and register.password is not None:
        problems.append((register.line, f"{here}.username", "username and password go together"))
    for account in register.nodes:
        if account.password is None:
            problems.append((account.line, f"{account.path}.password", "required"))
        if spec.nodes and account.node not in spec.nodes:
            problems.append(
                (
                    account.line,
                    f"{account.path}.node",
                    f"the peer is not attached to node {account.node!r} (its nodes: "
                    f"{', '.join(spec.nodes)})",
                )
            )
    if register.username is None:
        own = {account.node for account in register.nodes}
        if not spec.nodes:
            problems.append(
                (
                    register.line,
                    f"{here}.username",
                    "required for a peer attached to every node (or attach the peer to the "
                    "nodes that have their own account)",
                )
            )
        else:
            missing = [node for node in spec.nodes if node not in own]
            if missing:
                problems.append(
                    (
                        register.line,
                        f"{here}.nodes",
                        f"no account for node {', '.join(map(repr, missing))}: give each node "
                        "of the peer its own, or a default username and password",
                    )
                )
    return problems


def subscriber_rules(spec: SubscriberSpec) -> list[tuple[str, str]]:
    """What a subscriber's secrets must be, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if spec.password is not None and (spec.ha1_md5 or spec.ha1_sha256):
        problems.append(("password", "give a password or its HA1s, not both"))
    if (spec.ha1_md5 is None) != (spec.ha1_sha256 is None):
        problems.append(("ha1_md5", "ha1_md5 and ha1_sha256 go together"))
    return problems


def did_rules(spec: DidSpec) -> list[tuple[str, str]]:
    if (spec.subscriber is None) == (spec.peer is None):
        return [("subscriber", "a DID goes to a subscriber or a peer (one)")]
    return []


def register_columns(spec: PeerSpec) -> dict[str, Any]:
    """The peer row's registrar columns for ``spec``."""
    register = spec.register
    accounts = sorted(register.nodes, key=lambda a: a.node) if register else []
    return {
        "deliver_dids": spec.deliver_dids,
        "register_username": register.username if register else None,
        "register_password": register.password if register else None,
        "register_registrar": register.registrar if register else None,
        "register_expires": register.expires if register else None,
        "register_nodes": [
            {"node": a.node, "username": a.username, "password": a.password} for a in accounts
        ],
    }


@dataclass(slots=True)
class Loaded:
    """The registrar's rows, read once by :func:`validate` for :func:`apply`."""

    subscribers: dict[str, SubscriberRow]
    dids: dict[str, DidRow]


async def validate(
    writer: ConfigWriter,
    accounts: dict[str, AccountRow],
    tariffs: dict[str, TariffRow],
    peers: dict[str, PeerRow],
) -> Loaded:
    """Check the change's subscribers and DIDs against the database (issues go to ``writer``)."""
    session = writer.session
    doc = writer.doc
    subscribers = {r.username: r for r in await session.scalars(select(SubscriberRow))}
    dids = {r.number: r for r in await session.scalars(select(DidRow))}
    loaded = Loaded(subscribers, dids)

    account_currency = {name: row.currency for name, row in accounts.items()}
    account_currency.update({a.name: a.currency for a in doc.accounts})
    tariff_currency = {name: row.currency for name, row in tariffs.items()}
    tariff_currency.update({t.name: t.currency for t in doc.tariffs})

    # Digest usernames are one namespace for INVITEs: a peer's and a subscriber's must differ.
    in_file_peers = {spec.name for spec in doc.peers}
    peer_usernames = {
        row.username: name
        for name, row in peers.items()
        if row.username is not None and name not in in_file_peers
    }
    peer_usernames.update({s.username: s.name for s in doc.peers if s.username is not None})
    file_subscribers = {s.username for s in doc.subscribers}
    for spec in doc.peers:
        if spec.username is not None and (
            spec.username in file_subscribers or spec.username in subscribers
        ):
            writer.error(
                spec.username_line,
                f"{spec.path}.username",
                f"username {spec.username!r} is a subscriber's; digest usernames must differ",
            )

    for sub in doc.subscribers:
        owner = peer_usernames.get(sub.username)
        if owner is not None:
            writer.error(
                sub.line,
                f"{sub.path}.username",
                f"username {sub.username!r} is used by peer {owner!r} for digest",
            )
        currency = account_currency.get(sub.account.name)
        if currency is None:
            writer.error(
                sub.account.line, sub.account.path, f"unknown account {sub.account.name!r}"
            )
        if sub.tariff is not None:
            tariff_cur = tariff_currency.get(sub.tariff.name)
            if tariff_cur is None:
                writer.error(
                    sub.tariff.line, sub.tariff.path, f"unknown tariff {sub.tariff.name!r}"
                )
            elif currency is not None and tariff_cur != currency:
                writer.error(
                    sub.tariff.line,
                    sub.tariff.path,
                    f"tariff {sub.tariff.name!r} is in {tariff_cur} but account "
                    f"{sub.account.name!r} is in {currency}",
                )
        hashed = sub.ha1_md5 is not None and sub.ha1_sha256 is not None
        if sub.password is None and not hashed and sub.username not in subscribers:
            writer.error(
                sub.line,
                f"{sub.path}.password",
                "required for a new subscriber (or both ha1_md5 and ha1_sha256)",
            )

    # Peers as they will be, for DIDs owned by peers.
    peer_address = {name: row.address for name, row in peers.items()}
    peer_address.update({s.name: s.address for s in doc.peers})
    known_subscribers = set(subscribers) | file_subscribers
    for did in doc.dids:
        if did.subscriber is not None and did.subscriber.name not in known_subscribers:
            writer.error(
                did.subscriber.line,
                did.subscriber.path,
                f"unknown subscriber {did.subscriber.name!r}",
            )
        if did.peer is not None:
            if did.peer.name not in peer_address:
                writer.error(did.peer.line, did.peer.path, f"unknown peer {did.peer.name!r}")
            elif peer_address[did.peer.name] is None:
                writer.error(
                    did.peer.line,
                    did.peer.path,
                    f"peer {did.peer.name!r} has no address to forward the DID's calls to",
                )
    return loaded


async def apply(
    writer: ConfigWriter,
    loaded: Loaded,
    accounts: dict[str, AccountRow],
    tariffs: dict[str, TariffRow],
    peers: dict[str, PeerRow],
) -> None:
    """Create or update the change's subscribers, then its DIDs (the peers exist by now)."""
    session = writer.session
    doc = writer.doc
    realm = doc.realm
    subscribers = loaded.subscribers
    for spec in doc.subscribers:
        values: dict[str, Any] = {
            "account_id": accounts[spec.account.name].id,
            "tariff_id": None if spec.tariff is None else tariffs[spec.tariff.name].id,
            "allowed_cidrs": spec.allowed_cidrs,
            "max_contacts": spec.max_contacts,
            "max_calls": spec.max_calls,
            "caller_id": spec.caller_id,
            "enabled": spec.enabled,
        }
        if spec.password is not None:
            values["realm"] = realm
            values["ha1_md5"] = compute_ha1(spec.username, realm, spec.password, "MD5")
            values["ha1_sha256"] = compute_ha1(spec.username, realm, spec.password, "SHA-256")
        elif spec.ha1_md5 is not None and spec.ha1_sha256 is not None:
            values.update(realm=realm, ha1_md5=spec.ha1_md5, ha1_sha256=spec.ha1_sha256)
        row = subscribers.get(spec.username)
        if row is None:
            row = SubscriberRow(username=spec.username, **values)
            session.add(row)
            subscribers[spec.username] = row
            writer.audited("subscribers", spec.username, None, snapshot(row))
            writer.note("subscribers", spec.username, True, True)
        else:
            before = snapshot(row)
            changed = _set(row, values)
            writer.audited("subscribers", spec.username, before, snapshot(row))
            writer.note("subscribers", spec.username, False, changed)
    await session.flush()

    for did in doc.dids:
        values = {
            "subscriber_id": subscribers[did.subscriber.name].id if did.subscriber else None,
            "peer_id": peers[did.peer.name].id if did.peer else None,
            "enabled": did.enabled,
        }
        did_row = loaded.dids.get(did.number)
        if did_row is None:
            did_row = DidRow(number=did.number, **values)
            session.add(did_row)
            writer.audited("dids", did.number, None, snapshot(did_row))
            writer.note("dids", did.number, True, True)
        else:
            before = snapshot(did_row)
            changed = _set(did_row, values)
            writer.audited("dids", did.number, before, snapshot(did_row))
            writer.note("dids", did.number, False, changed)
    await session.flush()


def _set(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed
