"""The admin pages: server-rendered Jinja2, htmx for the live parts, a form per change.

Every form posts the session's CSRF token; a bad field re-renders the form with the message
next to that field (the same :class:`ConfigInvalid` issues the API turns into 422s).  Write
controls are shown only to admins and operators, and to nobody on a read-only node, whose
pages carry a banner naming the primary. One module per part of the menu; what they share
is in :mod:`.common`.
"""

from __future__ import annotations

from fastapi import APIRouter

from smartswitch.web.pages import (
    accounts,
    audit,
    auth,
    cdrs,
    dashboard,
    dids,
    peers,
    routes,
    security,
    settings,
    subscribers,
    tariffs,
    users,
)
from smartswitch.web.pages.common import LoginRequired, page_user, render, session_user, to_login

__all__ = ["LoginRequired", "page_user", "render", "router", "session_user", "to_login"]

router = APIRouter(include_in_schema=False)
for _part in (
    auth,
    dashboard,
    accounts,
    tariffs,
    peers,
    routes,
    cdrs,
    settings,
    users,
    subscribers,
    dids,
    security,
    audit,
):
    router.include_router(_part.router)
