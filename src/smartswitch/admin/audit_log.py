"""The audit log of configuration and balance changes (table ``config_audit``).

Every change the admin layer makes (the config writer's creates and updates, deletions,
settings, top-ups and adjustments, users and API tokens) adds one row per entity, **in the
transaction of the change** (a change rolled back leaves none; the log is on the primary and
replicates like configuration):

* who: :class:`Who`: the user (``alice``; ``alice (token ci)`` for an API token),
  ``provision`` or ``cli``; the front door (``web``, ``api``, ``provision FILE``, ``cli``);
  the client's address;
* when (UTC, milliseconds), what: the action (``create``, ``update``, ``delete``, ``topup``,
  ``adjustment``), the entity (``account``, ``tariff``, ``peer``, ``route``, ``subscriber``,
  ``did``, ``setting``, ``user``, ``token``) and its name;
* the changes: field -> [before, after] (None where there was or is none), references by
  name (``account`` rather than ``account_id``). Secrets never appear: a password or its
  hashes show as ``(secret)``, a new one as ``(new secret)``.

Not to be confused with ``smartswitch audit`` (:mod:`.audit`), which proves the money.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.model.ids import new_ulid
from smartswitch.store.schema import (
    AccountRow,
    ConfigAuditRow,
    PeerRow,
    SubscriberRow,
    TariffRow,
)

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "Change",
    "Who",
    "diff",
    "query",
    "record",
    "snapshot",
    "to_csv",
]

SECRET = "(secret)"
NEW_SECRET = "(new secret)"
# Columns whose values never enter the log; the subscriber's hashes are its password.
_SECRETS = {
    "password": "password",
    "register_password": "register_password",
    "ha1_md5": "password",
    "ha1_sha256": "password",
    "password_hash": "password",
    "token_hash": "token",
}
_SKIP = {"id", "realm"}
_REFERENCES = {
    "account_id": ("account", "accounts"),
    "tariff_id": ("tariff", "tariffs"),
    "peer_id": ("peer", "peers"),
    "subscriber_id": ("subscriber", "subscribers"),
    "user_id": ("user", "users"),
}
CSV_COLUMNS = ("at", "actor", "source", "address", "action", "entity", "name", "changes")


@dataclass(frozen=True, slots=True)
class Who:
    """Who makes a change, through which front door, from where."""

    actor: str
    source: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """One entity's change, before it is written: its values before and after (None: it did
    not exist, or no longer does), as :func:`snapshot` takes them."""

    action: str
    entity: str
    name: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    extra: Mapping[str, Any] | None = None
    """Fields to log as they are (a balance change's amount and note)."""


def _plain(value: Any) -> Any:
    """A JSON value for the log (money as its exact text, times in ISO 8601)."""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def snapshot(row: Any) -> dict[str, Any]:
    """A row's columns (not its id) as plain values, secrets included: :func:`diff` masks."""
    return {
        column.key: _plain(getattr(row, column.key))
        for column in row.__table__.columns
        if column.key not in _SKIP
    }


def diff(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    names: Mapping[str, Mapping[int, str]] | None = None,
) -> dict[str, list[Any]]:
    """field -> [before, after] for what differs; secrets masked, references by name."""
    names = names or {}
    old, new = before or {}, after or {}
    out: dict[str, list[Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key in _SECRETS:
            label = _SECRETS[key]
            masked = [None if a is None else SECRET, None if b is None else NEW_SECRET]
            if label not in out or out[label] == [None, None]:
                out[label] = masked
            continue
        if key in _REFERENCES:
            label, table = _REFERENCES[key]
            lookup = names.get(table, {})
            out[label] = [_name(lookup, a), _name(lookup, b)]
            continue
        out[key] = [a, b]
    return out


def _name(lookup: Mapping[int, str], value: Any) -> Any:
    if isinstance(value, int):
        return lookup.get(value, f"#{value}")
    return value


async def _names(session: AsyncSession) -> dict[str, dict[int, str]]:
    async def pairs(id_: Any, name: Any) -> dict[int, str]:
        return {row[0]: row[1] for row in await session.execute(select(id_, name))}

    return {
        "accounts": await pairs(AccountRow.id, AccountRow.name),
        "tariffs": await pairs(TariffRow.id, TariffRow.name),
        "peers": await pairs(PeerRow.id, PeerRow.name),
        "subscribers": await pairs(SubscriberRow.id, SubscriberRow.username),
    }


def _needs_names(changes: Iterable[Change]) -> bool:
    return any(
        key in _REFERENCES
        for change in changes
        for values in (change.before, change.after)
        if values
        for key in values
    )


async def record(
    session: AsyncSession,
    who: Who,
    changes: Iterable[Change],
    *,
    now: datetime | None = None,
    names: Mapping[str, Mapping[int, str]] | None = None,
) -> int:
    """Add the log rows of ``changes`` to the session (the caller's transaction); how many.
    A change whose fields did not change (and that has no ``extra``) adds none."""
    changes = list(changes)
    if names is None and _needs_names(changes):
        names = await _names(session)
    at = now or datetime.now(UTC)
    count = 0
    for change in changes:
        fields = diff(change.before, change.after, names)
        if change.extra:
            fields.update({k: [None, _plain(v)] for k, v in change.extra.items()})
        if not fields and change.action == "update":
            continue
        session.add(
            ConfigAuditRow(
                id=new_ulid(),
                at=at,
                actor=who.actor[:128],
                source=who.source[:255],
                address=who.address[:64],
                action=change.action,
                entity=change.entity,
                name=change.name[:255],
                changes=fields,
            )
        )
        count += 1
    return count


# --------------------------------------------------------------------------------------------
# Reading it


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    source: str
    address: str
    action: str
    entity: str
    name: str
    changes: dict[str, list[Any]]

    @classmethod
    def of(cls, row: ConfigAuditRow) -> AuditEntry:
        return cls(
            row.at,
            row.actor,
            row.source,
            row.address,
            row.action,
            row.entity,
            row.name,
            dict(row.changes),
        )

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON: the API's and ``smartswitch audit-log export --format json``."""
        return {
            "at": _at(self.at),
            "actor": self.actor,
            "source": self.source,
            "address": self.address,
            "action": self.action,
            "entity": self.entity,
            "name": self.name,
            "changes": self.changes,
        }

    def changes_text(self) -> str:
        """``field: before -> after; ...`` for a table cell or a CSV column."""
        return "; ".join(
            f"{field}: {_text(before)} -> {_text(after)}"
            for field, (before, after) in self.changes.items()
        )


def _at(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries: each given field narrows (``name`` and ``actor`` match a part)."""

    entity: str = ""
    name: str = ""
    actor: str = ""
    since: datetime | None = None
    until: datetime | None = None


async def query(
    session: AsyncSession, where: AuditFilter, limit: int | None = 100, offset: int = 0
) -> list[AuditEntry]:
    """The newest entries first."""
    stmt = select(ConfigAuditRow)
    if where.entity:
        stmt = stmt.where(ConfigAuditRow.entity == where.entity)
    if where.name:
        stmt = stmt.where(ConfigAuditRow.name.contains(where.name, autoescape=True))
    if where.actor:
        stmt = stmt.where(ConfigAuditRow.actor.contains(where.actor, autoescape=True))
    if where.since is not None:
        stmt = stmt.where(ConfigAuditRow.at >= where.since)
    if where.until is not None:
        stmt = stmt.where(ConfigAuditRow.at < where.until)
    stmt = stmt.order_by(ConfigAuditRow.at.desc(), ConfigAuditRow.id.desc()).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [AuditEntry.of(row) for row in await session.scalars(stmt)]


def to_csv(entries: Iterable[AuditEntry]) -> str:
    """The entries as CSV (a header line, then one line each; changes as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow(
            (
                _at(e.at),
                e.actor,
                e.source,
                e.address,
                e.action,
                e.entity,
                e.name,
                json.dumps(e.changes, separators=(",", ":"), sort_keys=True),
            )
        )
    return out.getvalue()
