"""``/api/v1/settings``: the node-wide settings (an admin changes them)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from smartswitch.web.api.common import SOURCE, AdminUser, In, Reader
from smartswitch.web.shared import admin_of

router = APIRouter()


class SettingIn(In):
    value: str


@router.get("/settings")
async def get_settings(request: Request, user: Reader) -> dict[str, str]:
    return await admin_of(request).get_settings()


@router.put("/settings/{name}")
async def put_setting(
    request: Request, name: str, body: SettingIn, user: AdminUser
) -> dict[str, str]:
    value = await admin_of(request).set_setting(name, body.value, source=SOURCE)
    return {"name": name, "value": value}
