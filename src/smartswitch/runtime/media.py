"""The node's media side: its own rtpengine (supervised) and/or external ones, as the B2BUA's
media port.

With ``media_rtpengine = true`` the node starts rtpengine with a generated command line
(:class:`~smartswitch.media.supervisor.RtpengineConfig`: userspace, never ``--no-fallback``,
pcap recording into ``<data_dir>/rtpengine``) and restarts it when it dies. Each
``[[media_relay]]`` is an external rtpengine. All of them form one weighted pool
(:class:`~smartswitch.media.engine.MediaEngine`): one relay is chosen per call and kept.

When the own rtpengine dies, every call it relayed lost its media: the pool forgets them and
the B2BUA ends them now (CDR: hangup side "switch", reason "media relay lost"), rather than
leaving two parties hearing nothing until one hangs up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smartswitch.b2bua.engine import B2BUA
from smartswitch.media.archive import RecordingArchive
from smartswitch.media.engine import MediaEngine, RelayConfig, RelayStatus
from smartswitch.media.relay import EngineRelay
from smartswitch.media.supervisor import RtpengineConfig, RtpengineExit, RtpengineSupervisor
from smartswitch.runtime.config import NodeConfig, parse_hostport

__all__ = ["LOCAL", "MediaStatus", "NodeMedia", "rtpengine_config"]

log = logging.getLogger(__name__)

LOCAL = "local"  # the pool's name for the node's own rtpengine

Resume = Callable[[Callable[[float], None]], None]


@dataclass(frozen=True, slots=True)
class MediaStatus:
    """The media side for the dashboard and /metrics."""

    enabled: bool
    up: bool  # at least one relay takes new calls
    relays: tuple[RelayStatus, ...]
    restarts: int  # of the own rtpengine
    lost_calls: int  # calls ended because their relay died
    failed_calls: int  # relayed calls refused for want of a relay (503) or by the relay


def rtpengine_config(config: NodeConfig, interface: str) -> RtpengineConfig:
    """The own rtpengine's settings from the node's (``--delete-delay=0``: a deleted call's
    ports are free at once; its pcaps in ``<data_dir>/rtpengine``)."""
    host, port = parse_hostport(config.media_ng)
    return RtpengineConfig(
        interface=interface,
        ng_host=host,
        ng_port=port,
        port_min=config.media_port_min,
        port_max=config.media_port_max,
        recording_dir=Path(config.data_dir) / "rtpengine",
        delete_delay=0,
        binary=config.media_binary,
    )


class NodeMedia:
    """Starts, watches and stops the node's media relays and attaches them to the B2BUA."""

    def __init__(self, config: NodeConfig, b2bua: B2BUA, resume: Resume, interface: str) -> None:
        self.config = config
        self.b2bua = b2bua
        self.resume = resume
        self.interface = interface
        self.supervisor: RtpengineSupervisor | None = None
        self.engine: MediaEngine | None = None
        self.relay: EngineRelay | None = None
        self.lost_calls = 0
        self.archive: RecordingArchive | None = None
        self._on_deleted: Callable[[Path], None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.config
        relays: list[RelayConfig] = []
        if config.media_rtpengine:
            settings = rtpengine_config(config, self.interface)
            assert settings.recording_dir is not None
            settings.recording_dir.mkdir(parents=True, exist_ok=True)
            self.supervisor = RtpengineSupervisor(
                settings, on_exit=self._own_exited, on_ready=self._own_ready
            )
            await self.supervisor.start()
            relays.append(
                RelayConfig(LOCAL, settings.ng_host, settings.ng_port, config.media_weight)
            )
        for external in config.media_relay:
            host, port = parse_hostport(external.address)
            relays.append(RelayConfig(external.name, host, port, external.weight))
        self.engine = MediaEngine(
            relays,
            ping_interval=config.media_ping_interval,
            timeout=config.media_timeout,
            tries=config.media_tries,
        )
        await self.engine.start()
        if config.media_rtpengine:
            # Only the own rtpengine's pcaps are on this file system to be filed.
            data_dir = Path(config.data_dir)
            self.archive = RecordingArchive(
                data_dir / "rtpengine",
                data_dir / "recordings",
                config.name,
                max_age=config.recording_max_age_days * 86400.0,
                max_bytes=config.recording_max_bytes,
            )
            self._pruner = asyncio.create_task(self._prune_forever(), name="recordings-prune")
        self.relay = EngineRelay(self.engine, self.archive)
        self.b2bua.media = self.relay
        log.info("media: %s", ", ".join(f"{r.name} {r.host}:{r.port}" for r in relays))

    def sync_files(
        self, on_filed: Callable[[Path], None], on_deleted: Callable[[Path], None]
    ) -> None:
        """Tell the cluster's file sync of each recording filed here (it pushes it to every
        node) and of each one the retention deleted (it forgets it)."""
        if self.relay is not None:
            self.relay.on_filed = on_filed
        self._on_deleted = on_deleted

    async def _prune_forever(self) -> None:
        archive = self.archive
        assert archive is not None
        while True:
            try:
                removed = await asyncio.to_thread(archive.prune)
            except OSError as exc:
                log.warning("recordings retention: %s", exc)
            else:
                if removed:
                    log.info("recordings retention: %d files removed", len(removed))
                forget = self._on_deleted
                if forget is not None:
                    for path in removed:
                        if path.parent == archive.directory:
                            forget(path)  # ours: never pushed again (copies go by their own)
            await asyncio.sleep(600.0)

    def _own_exited(self, exit: RtpengineExit) -> None:
        engine = self.engine
        if engine is None:
            return
        lost = engine.relay_lost(LOCAL, f"rtpengine exited ({exit.returncode})")
        if lost:
            log.warning("media: rtpengine died with %d calls: ending them", len(lost))
            self.resume(lambda now: self._end_lost(lost, now))

    def _end_lost(self, lost: list[str], now: float) -> None:
        self.lost_calls += self.b2bua.media_lost(lost, now)

    def _own_ready(self, pid: int) -> None:
        if self.engine is not None:
            # Back at once rather than at the next health ping.
            self.engine.mark_up(LOCAL)

    def status(self) -> MediaStatus:
        relays = tuple(self.engine.status()) if self.engine is not None else ()
        return MediaStatus(
            enabled=self.engine is not None,
            up=any(r.up and r.weight > 0 for r in relays),
            relays=relays,
            restarts=self.supervisor.restarts if self.supervisor is not None else 0,
            lost_calls=self.lost_calls,
            failed_calls=self.b2bua.stats["media_failed"],
        )

    async def close(self) -> None:
        """After the B2BUA ended its calls: wait for their deletes, then stop."""
        if self._pruner is not None:
            self._pruner.cancel()
        if self.relay is not None:
            await self.relay.drain()
        self.b2bua.media = None
        if self.engine is not None:
            await self.engine.close()
        if self.supervisor is not None:
            await self.supervisor.stop()
