"""What every API module shares: the token's user and the role it needs, body models' base,
and the shape of answers."""

from __future__ import annotations

import hmac
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from smartswitch.admin import users
from smartswitch.admin.users import User
from smartswitch.admin.writer import ChangeReport
from smartswitch.web.security import LOCAL_PREFIX, local_token
from smartswitch.web.shared import web_of

SOURCE = "api"


async def api_user(request: Request) -> User:
    web = web_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "an API token is required", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    if token.startswith(LOCAL_PREFIX):  # a command on the node's machine (read-only)
        expected = local_token(Path(web.config.data_dir))
        if expected is not None and hmac.compare_digest(token, expected):
            return users.LOCAL_READER
        raise HTTPException(401, "invalid API token", {"WWW-Authenticate": "Bearer"})
    async with web.sessions() as session:
        user = await users.user_for_token(session, token)
    if user is None:
        raise HTTPException(401, "invalid API token", {"WWW-Authenticate": "Bearer"})
    request.state.user = user  # for the audit log (shared.who_of)
    return user


async def api_writer(request: Request, user: Annotated[User, Depends(api_user)]) -> User:
    if not user.can_write:
        raise HTTPException(403, f"the {user.role.value} role cannot change anything")
    refusal = await web_of(request).write_refusal()
    if refusal:
        raise HTTPException(409, refusal)
    return user


async def api_admin(request: Request, user: Annotated[User, Depends(api_writer)]) -> User:
    if not user.is_admin:
        raise HTTPException(403, "only an admin can do this")
    return user


Reader = Annotated[User, Depends(api_user)]
Writer = Annotated[User, Depends(api_writer)]
AdminUser = Annotated[User, Depends(api_admin)]


class In(BaseModel):
    """A request body: unknown fields are refused (a typo is an error, not ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def body_data(model: BaseModel) -> dict[str, Any]:
    """A body as the readers take it: the fields given (null is left out), JSON names."""
    return model.model_dump(exclude_none=True, by_alias=True)


def report_out(report: ChangeReport) -> dict[str, Any]:
    return {"changed": report.changed, "config_version": report.config_version}


def money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"
