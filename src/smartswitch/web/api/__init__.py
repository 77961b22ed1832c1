"""The REST API, ``/api/v1``: the same admin operations as provisioning and the web UI.

Authentication is a bearer token (``Authorization: Bearer sst_...``, made on the UI's
"API tokens" page or by ``POST /api/v1/tokens``).  No token or a wrong one: 401.  Writes need
the admin or operator role (403 otherwise) and a writable node: on a read-only replica they
answer 409 naming the primary.  A bad field answers 422 with the field in ``loc`` (the shape
FastAPI uses for its own validation errors).  Money is always a decimal string. One module
per resource; what they share is in :mod:`.common`.
"""

from __future__ import annotations

from fastapi import APIRouter

from smartswitch.web.api import (
    accounts,
    audit,
    calls,
    dids,
    peers,
    routes,
    settings,
    subscribers,
    tariffs,
    users,
)
from smartswitch.web.api.common import api_user

__all__ = ["api_user", "router"]

router = APIRouter(prefix="/api/v1", tags=["api"])
for _part in (
    accounts,
    tariffs,
    peers,
    routes,
    subscribers,
    dids,
    settings,
    calls,
    users,
    audit,
):
    router.include_router(_part.router)
