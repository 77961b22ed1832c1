"""``/api/v1/users`` and ``/api/v1/tokens``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import Field

from smartswitch.admin import users
from smartswitch.web.api.common import AdminUser, In, Reader
from smartswitch.web.shared import web_of, who_of

router = APIRouter()


class UserIn(In):
    name: str
    role: Literal["admin", "operator", "read-only"]
    password: str | None = Field(None, description="at least 10 characters; random if left out")


class TokenIn(In):
    name: str = Field("api", max_length=64)


@router.get("/users")
async def list_users(request: Request, user: Reader) -> list[dict[str, Any]]:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can list users")
    async with web_of(request).sessions() as session:
        return [
            {"name": u.name, "role": u.role.value, "enabled": u.enabled}
            for u in await users.list_users(session)
        ]


@router.post("/users", status_code=201)
async def create_user(request: Request, body: UserIn, user: AdminUser) -> dict[str, Any]:
    async with web_of(request).sessions() as session, session.begin():
        new, password = await users.create_user(
            session, body.name, body.role, body.password, who=who_of(request)
        )
    out: dict[str, Any] = {"name": new.name, "role": new.role.value}
    if body.password is None:
        out["password"] = password  # made here: the caller's only chance to see it
    return out


@router.post("/tokens", status_code=201)
async def create_token(
    request: Request, user: Reader, body: Annotated[TokenIn | None, Body()] = None
) -> dict[str, str]:
    """A new token for the caller (read-only users too: tokens carry the user's role)."""
    async with web_of(request).sessions() as session, session.begin():
        name = (body or TokenIn(name="api")).name
        token = await users.create_token(session, user, name, who=who_of(request))
    return {"token": token}
