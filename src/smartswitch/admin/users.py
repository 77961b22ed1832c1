"""Users of the web UI and the REST API: roles, argon2 passwords, API tokens.

Password hashing is deliberately slow (argon2id, tens of milliseconds of CPU), so it runs in a
worker thread: the node's event loop also carries SIP and must not stall on a login.
API tokens are random 256-bit strings shown once; only their SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from smartswitch.admin import audit_log, fields
from smartswitch.admin.audit_log import Change, Who
from smartswitch.admin.views import UserView
from smartswitch.admin.writer import ConfigInvalid, Issue
from smartswitch.store.schema import ApiTokenRow, UserRole, UserRow

__all__ = [
    "LOCAL_READER",
    "ROLES",
    "TOKEN_PREFIX",
    "User",
    "create_token",
    "create_user",
    "ensure_first_admin",
    "hash_password",
    "new_password",
    "user_for_token",
    "verify_login",
]

ROLES = tuple(r.value for r in UserRole)
TOKEN_PREFIX = "sst_"  # recognisable in a config file or a leak scanner
MIN_PASSWORD = 10

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown name as slow as for a known one, so the
# timing does not tell which user names exist.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True, slots=True)
class User:
    """Who is logged in (never carries the hash)."""

    id: int
    name: str
    role: UserRole
    token: str | None = None
    """The name of the API token it came with (None: a UI session or a local command)."""

    @property
    def actor(self) -> str:
        """How the audit log names it."""
        return self.name if self.token is None else f"{self.name} (token {self.token})"

    @property
    def can_write(self) -> bool:
        return self.role in (UserRole.ADMIN, UserRole.OPERATOR)

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN


# A command on the node's own machine, with the node's local token: it may read.
LOCAL_READER = User(0, "local", UserRole.READ_ONLY)


def _user(row: UserRow) -> User:
    return User(row.id, row.name, row.role)


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(hash_: str, password: str) -> bool:
    try:
        return _hasher.verify(hash_, password)
    except (VerificationError, InvalidHashError):
        return False


def _invalid(path: str, message: str) -> ConfigInvalid:
    return ConfigInvalid([Issue("user", None, path, message)])


async def create_user(
    session: AsyncSession,
    name: str,
    role: str,
    password: str | None = None,
    who: Who | None = None,
) -> tuple[User, str]:
    """Add a user; the password given or a new random one, returned (the only time it is seen).
    Raises :class:`ConfigInvalid` naming the field. ``who``: for the audit log."""
    try:
        fields.parse_name(name)
    except ValueError as exc:
        raise _invalid("name", str(exc)) from None
    if role not in ROLES:
        raise _invalid("role", f"must be one of {', '.join(ROLES)}; got {role!r}")
    if password is None:
        password = new_password()
    elif len(password) < MIN_PASSWORD:
        raise _invalid("password", f"at least {MIN_PASSWORD} characters")
    if await session.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
        raise _invalid("name", f"user {name!r} exists already")
    row = UserRow(
        name=name,
        role=UserRole(role),
        password_hash=await hash_password(password),
        created_at=datetime.now(UTC),
        enabled=True,
    )
    session.add(row)
    await session.flush()
    if who is not None:
        after = {"role": row.role.value, "enabled": True, "password_hash": "x"}
        await audit_log.record(session, who, [Change("create", "user", name, None, after)])
    return _user(row), password


async def verify_login(session: AsyncSession, name: str, password: str) -> User | None:
    row = await session.scalar(select(UserRow).where(UserRow.name == name))
    ok = await asyncio.to_thread(
        _verify, row.password_hash if row is not None else _DUMMY_HASH, password
    )
    if row is None or not ok or not row.enabled:
        return None
    return _user(row)


async def load_user(session: AsyncSession, user_id: int) -> User | None:
    row = await session.get(UserRow, user_id)
    return _user(row) if row is not None and row.enabled else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(session: AsyncSession, user: User, name: str, who: Who | None = None) -> str:
    """A new API token for ``user``; the plain token is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if who is not None:
        change = Change("create", "token", f"{user.name}/{name[:64] or 'token'}", None, {})
        await audit_log.record(session, who, [change])
    session.add(
        ApiTokenRow(
            user_id=user.id,
            name=name[:64] or "token",
            token_hash=token_hash(token),
            created_at=datetime.now(UTC),
        )
    )
    await session.flush()
    return token


async def user_for_token(session: AsyncSession, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    found = (
        await session.execute(
            select(UserRow, ApiTokenRow.name)
            .join(ApiTokenRow, ApiTokenRow.user_id == UserRow.id)
            .where(ApiTokenRow.token_hash == token_hash(token))
        )
    ).first()
    if found is None or not found[0].enabled:
        return None
    row, name = found
    return User(row.id, row.name, row.role, token=name)


async def ensure_first_admin(session: AsyncSession) -> str | None:
    """On a database with no user at all, make ``admin`` with a random password and return it
    (the caller shows it once); otherwise None."""
    if await session.scalar(select(func.count()).select_from(UserRow)):
        return None
    who = Who("node", "first start")
    _, password = await create_user(session, "admin", UserRole.ADMIN.value, who=who)
    return password


async def list_users(session: AsyncSession) -> list[UserView]:
    return [
        UserView.of(row) for row in await session.scalars(select(UserRow).order_by(UserRow.name))
    ]


async def set_password(
    session: AsyncSession, user_id: int, password: str, who: Who | None = None
) -> None:
    if len(password) < MIN_PASSWORD:
        raise _invalid("password", f"at least {MIN_PASSWORD} characters")
    row = await session.get(UserRow, user_id)
    if row is None:
        raise _invalid("name", "no such user")
    before = {"password_hash": row.password_hash}
    row.password_hash = await hash_password(password)
    if who is not None:
        change = Change("update", "user", row.name, before, {"password_hash": row.password_hash})
        await audit_log.record(session, who, [change])
