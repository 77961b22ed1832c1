"""File sync in the node: :class:`~smartswitch.cluster.filesync.FileSync` over the data dir.

Each node of a cluster (it has a dedicated IP and the cluster secret) runs its rsync daemon on
its dedicated IP and pushes the files it writes to every other node listed in the nodes table:

    <data_dir>/captures/<node>/...     call captures (written by runtime.capture)
    <data_dir>/recordings/<node>/...   media recordings (written by whoever records)

A writer closes its file under ``<data_dir>/<kind>/<this node>/`` and calls :meth:`add` (or
:meth:`enqueue` with the path relative to the data dir); a file it forgets to announce is
found by the periodic reconciliation pass, which walks every kind.  A file retention deleted
is :meth:`forget`-ed: its queued pushes go and, since only the origin sends and it no longer
has it, it never comes back.  The daemon's module gives peers the data dir but only the kinds
above (its filter), and only to write.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from smartswitch.cluster.filesync import FileSync, FileSyncSettings, FileSyncStatus, RsyncPeer
from smartswitch.cluster.nodes import list_nodes
from smartswitch.runtime.config import NodeConfig

log = logging.getLogger("smartswitch.runtime.filesync")


class FileSyncService:
    """The node's file sync (see the module docstring)."""

    def __init__(self, config: NodeConfig, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.config = config
        self._sessions = sessions
        self.root = config.data_dir
        self.sync = FileSync(
            FileSyncSettings(
                files_root=config.data_dir,
                data_dir=config.data_dir / "filesync",
                node_name=config.name,
                address=config.dedicated_ip,
                cluster_secret=config.cluster_secret,
                port=config.rsync_port,
                reconcile_interval=config.file_reconcile_interval,
            ),
            self._peers,
        )

    @staticmethod
    def wanted(config: NodeConfig) -> bool:
        """Whether this node takes part: a cluster member with an address to bind."""
        return bool(config.dedicated_ip and config.cluster_secret and config.db_scheme != "single")

    async def _peers(self) -> Sequence[RsyncPeer]:
        async with self._sessions() as session:
            nodes = await list_nodes(session)
        return [
            RsyncPeer(n.name, n.dedicated_ip, self.config.rsync_port)
            for n in nodes
            if n.dedicated_ip
        ]

    async def start(self) -> None:
        (self.root / "filesync").mkdir(parents=True, exist_ok=True)
        await self.sync.start()

    async def close(self) -> None:
        await self.sync.stop()

    def dir_for(self, kind: str) -> Path:
        """Where this node writes its files of ``kind`` (``captures``, ``recordings``)."""
        return self.sync.dir_for(kind)

    def add(self, path: str | os.PathLike[str]) -> None:
        """A file of ours, closed: push it to every other node (never blocks)."""
        try:
            self.sync.add(path)
        except ValueError as exc:
            log.error("file sync: %s", exc)

    def enqueue(self, relpath: str) -> None:
        """:meth:`add` with the path relative to the data dir: ``<kind>/<node>/<name...>``."""
        self.add(relpath)

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Retention deleted it here: never send it again."""
        try:
            self.sync.forget(path)
        except ValueError as exc:
            log.error("file sync: %s", exc)

    def retention_changed(self, max_age: float | None, sweep_interval: float) -> None:
        """Files this old are left out of reconciliation: retention deletes them on every
        node, each at its own sweep, and the origin must not push one back to a node that
        already deleted it in between (two sweep intervals of margin)."""
        limit = None if max_age is None else max(max_age - 2 * sweep_interval, 0.0)
        self.sync.settings = dataclasses.replace(self.sync.settings, reconcile_max_age=limit)

    async def status(self) -> FileSyncStatus:
        return await self.sync.status()
