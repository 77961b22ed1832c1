"""What the pages and the API both take from a request."""

from __future__ import annotations

from fastapi import Request, Response

from smartswitch.admin.operations import Admin
from smartswitch.web.context import Web

__all__ = ["admin_of", "prefix_of", "rates_csv", "web_of"]


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def admin_of(request: Request) -> Admin:
    """The admin operations, which tell the node after every committed change."""
    return web_of(request).admin


async def rates_csv(admin: Admin, name: str) -> Response:
    """A tariff's rates as a CSV download."""
    text = await admin.export_rates(name)
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-rates.csv"'},
    )


def prefix_of(key: str) -> str:
    """The prefix a route's key in a URL names ("default" is the route of prefix "")."""
    return "" if key == "default" else key
