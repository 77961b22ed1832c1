"""What the web side needs of the node, in one place: the :class:`Web` context the pages and
the API share, over the node's :class:`~smartswitch.web.ports.NodePort`."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.admin.audit_log import Who
from smartswitch.admin.operations import Admin
from smartswitch.registrar.guard import SourceGuard
from smartswitch.web.ports import NodePort, NodeSettings
from smartswitch.web.security import (
    REVOKED_FILE,
    LoginLimiter,
    Revocations,
    Signer,
    web_secret,
)
from smartswitch.web.stats import Sampler

log = logging.getLogger("smartswitch.web")

HERE = Path(__file__).resolve().parent


class LabMode(Exception):
    """A lab-mode node has no database: nothing to log in to or configure."""


class Web:
    def __init__(self, node: NodePort) -> None:
        self.node = node
        self.config: NodeSettings = node.config
        self.signer = Signer(web_secret(Path(self.config.data_dir)))
        self.revoked = Revocations(Path(self.config.data_dir) / REVOKED_FILE)
        self.limiter = LoginLimiter()
        self.sampler = Sampler(node)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.tasks: list[asyncio.Task[Any]] = []

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        sessions = self.node.sessions
        if sessions is None:
            raise LabMode
        return sessions

    @property
    def has_database(self) -> bool:
        return self.node.sessions is not None

    @property
    def read_only(self) -> bool:
        return self.node.read_only

    @property
    def primary(self) -> str:
        return self.node.primary_name or "the primary"

    @property
    def read_only_message(self) -> str:
        return f"this node is read-only (a replica): change the configuration on {self.primary}"

    async def write_refusal(self) -> str | None:
        """Why configuration may not be changed through this node now (None: it may): a
        replica, or a primary that cannot confirm it still holds the primary lease."""
        if self.read_only:
            return self.read_only_message
        return await self.node.write_refusal()

    def live_balance(self, account_id: int) -> tuple[Decimal | None, Decimal | None]:
        """The node's own view (balance less its unshipped charges, and what is available for
        new calls), when the node tracks it."""
        live = self.node.balance(account_id)
        return live if live is not None else (None, None)

    @property
    def realm(self) -> str:
        return self.config.sip_realm

    def live_bindings(self) -> list[dict[str, Any]] | None:
        """This node's registrations now (None when the node has no registrar)."""
        registrar = self.node.registrar
        return registrar.bindings() if registrar is not None else None

    def guard(self) -> SourceGuard | None:
        """This node's guard against guessing and floods (None without a registrar). Read on
        the event loop, where it lives."""
        registrar = self.node.registrar
        return registrar.guard if registrar is not None else None

    def admin_for(self, who: Who | None) -> Admin:
        """The admin operations on this node's database: subscribers' passwords hashed for the
        node's realm, :meth:`config_changed` called after every committed change, and
        ``who`` named in the audit log."""
        return Admin(self.sessions, realm=self.realm, on_change=self.config_changed, who=who)

    def config_changed(self) -> None:
        """Ask the node to reload its views now rather than at its next poll."""
        self.node.config_changed()
