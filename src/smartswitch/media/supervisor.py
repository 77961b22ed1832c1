"""Run the node's own rtpengine: a generated command line, restarts with back-off, a clean stop.

rtpengine 10.5 runs here in userspace only (``--table=-1``: no kernel forwarding table) and
without a config file (``--config-file=none``), everything on its command line; it stays in the
foreground and logs to stderr, which we keep (the last lines, for the dashboard and errors).
``--no-fallback`` is never given: it makes the daemon refuse to start without the kernel module.

Theory of operation: :meth:`RtpengineSupervisor.start` spawns the daemon and waits until its ng
port answers a ping. A watcher task then waits for the process; when it dies (crash, kill,
OOM) it calls ``on_exit`` at once — every call the daemon relayed is lost with it, and the
B2BUA should end or mark them — then starts a new one after a back-off that grows with
consecutive quick failures (``backoff``) and resets once a run lasted ``stable_after``
seconds. :meth:`stop` sends SIGTERM to the daemon's PID, and SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smartswitch.media.ng import NgClient
from smartswitch.model.media import MediaFailure

__all__ = ["RtpengineConfig", "RtpengineExit", "RtpengineSupervisor", "SupervisorError"]

log = logging.getLogger(__name__)


class SupervisorError(RuntimeError):
    """rtpengine could not be started (bad binary, port in use, not ready in time)."""


@dataclass(frozen=True, slots=True)
class RtpengineConfig:
    """The daemon's settings; :meth:`command_line` is how it is started.

    ``interface`` is given to ``--interface`` as is: an address ("192.0.2.10"), a named
    logical interface ("pub/192.0.2.10", for ``direction``), or an address with the one to
    advertise in SDP behind 1:1 NAT ("10.0.0.5!192.0.2.10"). Each call takes four ports from
    ``port_min``-``port_max`` (RTP and RTCP for each side); keep the range out of the kernel's
    ephemeral ports (32768-60999 on Linux) where other programs' sockets land.
    """

    interface: str
    ng_host: str
    ng_port: int = 2223
    port_min: int = 30000
    port_max: int = 30999
    cli_port: int | None = None  # ``--listen-cli`` on ng_host (rtpengine-ctl talks to it)
    recording_dir: Path | None = None  # ``--recording-dir`` with ``--recording-method=pcap``
    timeout: int | None = None  # seconds without any media before a call is dropped (60)
    silent_timeout: int | None = None  # the same for a call on hold (3600)
    delete_delay: int | None = None  # seconds a deleted call lingers (30; ng delete sets 0)
    num_threads: int | None = None
    log_level: int | None = None  # syslog levels 0-7 (rtpengine's default 5, NOTICE... 6)
    binary: str = "/usr/bin/rtpengine"
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1024 <= self.port_min < self.port_max <= 65535:
            raise ValueError(f"bad RTP port range {self.port_min}-{self.port_max}")
        if self.port_max - self.port_min < 3:
            raise ValueError("the RTP port range needs at least 4 ports (one call)")
        if not 0 < self.ng_port <= 65535:
            raise ValueError(f"bad ng port {self.ng_port}")
        if "--no-fallback" in self.extra_args:
            raise ValueError("--no-fallback needs the kernel module: rtpengine would not start")
        if isinstance(self.extra_args, str):
            raise TypeError("extra_args is a tuple of arguments")

    @property
    def calls_capacity(self) -> int:
        return (self.port_max - self.port_min + 1) // 4

    def command_line(self) -> list[str]:
        argv = [
            self.binary,
            "--config-file=none",
            "--table=-1",
            f"--interface={self.interface}",
            f"--listen-ng={_join(self.ng_host, self.ng_port)}",
            "--foreground",
            "--log-stderr",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_max}",
        ]
        if self.cli_port is not None:
            argv.append(f"--listen-cli={_join(self.ng_host, self.cli_port)}")
        if self.recording_dir is not None:
            argv += [f"--recording-dir={self.recording_dir}", "--recording-method=pcap"]
        for option, value in (
            ("--timeout", self.timeout),
            ("--silent-timeout", self.silent_timeout),
            ("--delete-delay", self.delete_delay),
            ("--num-threads", self.num_threads),
            ("--log-level", self.log_level),
        ):
            if value is not None:
                argv.append(f"{option}={value}")
        argv.extend(self.extra_args)
        return argv


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RtpengineExit:
    """The daemon died (or was stopped): what ``on_exit`` is told."""

    pid: int
    returncode: int  # negative: killed by that signal
    uptime: float  # seconds it ran
    restarts: int  # restarts before this exit
    restarting: bool  # False when we stopped it
    log_tail: tuple[str, ...] = field(default=())


class RtpengineSupervisor:
    """Keeps one rtpengine running (see the module docstring)."""

    def __init__(
        self,
        config: RtpengineConfig,
        *,
        on_exit: Callable[[RtpengineExit], None] | None = None,
        on_ready: Callable[[int], None] | None = None,
        backoff: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
        stable_after: float = 30.0,
        ready_timeout: float = 5.0,
        log_lines: int = 200,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self.config = config
        self.on_exit = on_exit
        self.on_ready = on_ready
        self.backoff = tuple(backoff)
        self.stable_after = stable_after
        self.ready_timeout = ready_timeout
        self.restarts = 0
        self.last_exit: RtpengineExit | None = None
        self.last_error: str | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._process: asyncio.subprocess.Process | None = None
        self._ready = False
        self._started_at = 0.0
        self._readers: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The daemon's PID while it runs (ready or still starting), else None."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def running(self) -> bool:
        """The daemon runs and answered its ready ping."""
        return self._ready and self.pid is not None

    async def start(self) -> None:
        """Start the daemon and return once its ng port answers; :class:`SupervisorError` if
        it does not within ``ready_timeout`` (or something else already answers there)."""
        if self._watcher is not None:
            raise RuntimeError("supervisor already started")
        self._stopping.clear()
        if await self._answers(tries=1, timeout=0.2):
            raise SupervisorError(
                f"something already answers ng on {self.config.ng_host}:{self.config.ng_port}"
            )
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="rtpengine-supervisor")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop watching, then SIGTERM the daemon by its PID (SIGKILL after ``timeout``)."""
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "rtpengine %d ignored SIGTERM for %.1f s: SIGKILL", process.pid, timeout
                )
                process.kill()
                await process.wait()
        if watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for reader in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # ----------------------------------------------------------------------------------------

    async def _spawn(self) -> None:
        argv = self.config.command_line()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a ^C to the node's terminal is for the node, not for it
            )
        except OSError as exc:
            self.last_error = f"cannot run {argv[0]}: {exc}"
            raise SupervisorError(self.last_error) from exc
        self._process = process
        self._ready = False
        self._started_at = time.monotonic()
        assert process.stderr is not None
        reader = asyncio.create_task(self._read_log(process.stderr), name="rtpengine-log")
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            if await self._answers(tries=1, timeout=0.1):
                self._ready = True
                log.info(
                    "rtpengine %d ready on %s:%d",
                    process.pid,
                    self.config.ng_host,
                    self.config.ng_port,
                )
                if self.on_ready is not None:
                    self.on_ready(process.pid)
                return
            await asyncio.sleep(0.05)
        if process.returncode is None:
            process.kill()
            await process.wait()
        tail = " | ".join(list(self.log_tail)[-5:])
        self.last_error = f"rtpengine not ready (exit {process.returncode}): {tail}"
        raise SupervisorError(self.last_error)

    async def _answers(self, tries: int, timeout: float) -> bool:
        client = NgClient(self.config.ng_host, self.config.ng_port, tries=tries, timeout=timeout)
        try:
            await client.ping()
        except MediaFailure:
            return False
        finally:
            client.close()
        return True

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self.log_tail.append(text)
            if "ERR" in text or "CRIT" in text or "ALERT" in text:
                self.last_error = text
            log.debug("rtpengine: %s", text)

    async def _watch(self) -> None:
        quick_failures = 0
        while True:
            process = self._process
            assert process is not None
            returncode = await process.wait()
            uptime = time.monotonic() - self._started_at
            stopping = self._stopping.is_set()
            exit_info = RtpengineExit(
                pid=process.pid,
                returncode=returncode,
                uptime=uptime,
                restarts=self.restarts,
                restarting=not stopping,
                log_tail=tuple(list(self.log_tail)[-10:]),
            )
            self.last_exit = exit_info
            if not stopping:
                self.last_error = f"rtpengine {process.pid} exited with {returncode}"
                log.warning("%s after %.1f s", self.last_error, uptime)
            if self.on_exit is not None:
                try:
                    self.on_exit(exit_info)
                except Exception:
                    log.exception("rtpengine on_exit callback failed")
            if stopping:
                return
            quick_failures = 0 if uptime >= self.stable_after else quick_failures + 1
            delay = self.backoff[min(max(quick_failures - 1, 0), len(self.backoff) - 1)]
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
                self.restarts += 1
                try:
                    await self._spawn()
                    break
                except SupervisorError as exc:
                    log.warning("restart of rtpengine failed: %s", exc)
                    quick_failures += 1
                    delay = self.backoff[min(quick_failures - 1, len(self.backoff) - 1)]
