"""What the pages and the API both take from a request."""

from __future__ import annotations

from fastapi import Request, Response

from smartswitch.admin.audit_log import Who
from smartswitch.admin.operations import Admin
from smartswitch.admin.users import User
from smartswitch.admin.views import NodeView
from smartswitch.web.context import Web

__all__ = ["admin_of", "cluster_nodes", "prefix_of", "rates_csv", "web_of", "who_of"]


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def who_of(request: Request) -> Who | None:
    """Who the audit log names for this request's changes: the user the page or the API
    found (``request.state.user``), the front door, the client's address."""
    user = getattr(request.state, "user", None)
    if not isinstance(user, User):
        return None
    source = "api" if request.url.path.startswith("/api/") else "web"
    address = request.client.host if request.client else ""
    return Who(user.actor, source, address)


def admin_of(request: Request) -> Admin:
    """The admin operations, which tell the node after every committed change and name the
    request's user in the audit log."""
    return web_of(request).admin_for(who_of(request))


async def cluster_nodes(request: Request) -> list[NodeView]:
    """The cluster's nodes (the ``nodes`` table), and this node as its configuration says
    when it is not there (a single node, or one not registered yet)."""
    nodes = await admin_of(request).list_nodes()
    config = web_of(request).config
    name = config.node_name or config.node_id
    if name and all(node.name != name for node in nodes):
        nodes.append(
            NodeView(
                name,
                config.dedicated_ip,
                config.sip_listen,
                config.shared_ip,
            )
        )
        nodes.sort(key=lambda node: node.name)
    return nodes


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
