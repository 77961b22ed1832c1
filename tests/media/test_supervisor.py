"""The supervisor runs a real rtpengine (on 127.0.77.5): its command line, ready on start,
restarted with the callback told when it is killed, stopped by its PID."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from smartswitch.media.ng import NgClient
from smartswitch.media.supervisor import (
    RtpengineConfig,
    RtpengineExit,
    RtpengineSupervisor,
    SupervisorError,
)

from .rtpengine import NG_PORT, PORT_MAX, PORT_MIN, require_rtpengine

IP = "127.0.77.5"


def config(tmp_path: Path, **overrides: object) -> RtpengineConfig:
    settings: dict[str, object] = {
        "interface": IP,
        "ng_host": IP,
        "ng_port": NG_PORT,
        "port_min": PORT_MIN,
        "port_max": PORT_MAX,
    }
    settings.update(overrides)
    return RtpengineConfig(**settings)  # type: ignore[arg-type]


def test_command_line(tmp_path: Path) -> None:
    argv = config(
        tmp_path, cli_port=22223, recording_dir=tmp_path / "rec", delete_delay=0, timeout=30
    ).command_line()
    assert argv == [
        "/usr/bin/rtpengine",
        "--config-file=none",
        "--table=-1",
        f"--interface={IP}",
        f"--listen-ng={IP}:22222",
        "--foreground",
        "--log-stderr",
        "--port-min=30000",
        "--port-max=30999",
        f"--listen-cli={IP}:22223",
        f"--recording-dir={tmp_path / 'rec'}",
        "--recording-method=pcap",
        "--timeout=30",
        "--delete-delay=0",
    ]
    assert "--no-fallback" not in argv
    ipv6 = RtpengineConfig(interface="pub/2001:db8::1", ng_host="::1", ng_port=2223)
    assert "--listen-ng=[::1]:2223" in ipv6.command_line()
    assert "--interface=pub/2001:db8::1" in ipv6.command_line()
    assert config(tmp_path).calls_capacity == 250  # four ports a call


@pytest.mark.parametrize(
    "overrides",
    [
        {"port_min": 40000, "port_max": 30000},
        {"port_min": 80, "port_max": 1000},
        {"port_min": 30000, "port_max": 30002},
        {"ng_port": 0},
        {"extra_args": ("--no-fallback",)},
        {"extra_args": "--foo"},
    ],
)
def test_config_refuses(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        config(tmp_path, **overrides)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _pong(host: str) -> bool:
    ng = NgClient(host, NG_PORT, timeout=0.2, tries=2)
    try:
        await ng.ping()
        return True
    finally:
        ng.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists" until reaped; the supervisor reaps its children.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_start_kill_restart_stop(tmp_path: Path) -> None:
    require_rtpengine()
    exits: list[RtpengineExit] = []
    readies: list[int] = []

    async def scenario() -> None:
        supervisor = RtpengineSupervisor(
            config(tmp_path, recording_dir=tmp_path / "rec"),
            on_exit=exits.append,
            on_ready=readies.append,
            backoff=(0.1, 0.5),
        )
        await supervisor.start()
        try:
            first = supervisor.pid
            assert first is not None and supervisor.running
            assert readies == [first]
            assert await _pong(IP)
            assert (tmp_path / "rec" / "pcaps").is_dir()  # recording set up

            os.kill(first, signal.SIGKILL)
            await _until(lambda: len(exits) == 1)
            assert exits[0].pid == first
            assert exits[0].returncode == -signal.SIGKILL
            assert exits[0].restarting and exits[0].restarts == 0
            assert exits[0].log_tail and "Startup complete" in "\n".join(exits[0].log_tail)

            await _until(lambda: supervisor.running and supervisor.pid != first)
            second = supervisor.pid
            assert second is not None and readies == [first, second]
            assert supervisor.restarts == 1
            assert supervisor.last_error == f"rtpengine {first} exited with -9"
            assert await _pong(IP)
        finally:
            await supervisor.stop()
        assert supervisor.pid is None and not supervisor.running
        assert not _alive(second)
        assert len(exits) == 2 and not exits[1].restarting and exits[1].returncode == 0
        assert not await _pong_quietly(IP)

    asyncio.run(scenario())


async def _pong_quietly(host: str) -> bool:
    try:
        return await _pong(host)
    except Exception:
        return False


def test_a_second_rtpengine_on_the_same_address_is_refused(tmp_path: Path) -> None:
    require_rtpengine()

    async def scenario() -> None:
        first = RtpengineSupervisor(config(tmp_path))
        await first.start()
        try:
            second = RtpengineSupervisor(config(tmp_path))
            with pytest.raises(SupervisorError, match="already answers"):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(scenario())


def test_a_binary_that_does_not_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        missing = RtpengineSupervisor(config(tmp_path, binary=str(tmp_path / "nope")))
        with pytest.raises(SupervisorError, match="cannot run"):
            await missing.start()
        await missing.stop()
        failing = RtpengineSupervisor(config(tmp_path, binary="/bin/false"), ready_timeout=2.0)
        with pytest.raises(SupervisorError, match="not ready"):
            await failing.start()
        await failing.stop()

    asyncio.run(scenario())


def test_restart_failures_back_off_until_stopped(tmp_path: Path) -> None:
    """A daemon that dies at once is restarted with growing delays, never in a busy loop."""
    require_rtpengine()
    # rtpengine the first time, an immediate failure every time after
    wrapper = tmp_path / "rtpengine-once"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'[ -e "{tmp_path}/ran" ] && exit 1\n'
        f'touch "{tmp_path}/ran"\n'
        'exec /usr/bin/rtpengine "$@"\n'
    )
    wrapper.chmod(0o755)
    exits: list[RtpengineExit] = []

    async def scenario() -> RtpengineSupervisor:
        supervisor = RtpengineSupervisor(
            config(tmp_path, binary=str(wrapper)),
            on_exit=exits.append,
            backoff=(0.05, 0.2, 0.4),
            ready_timeout=1.0,
        )
        await supervisor.start()
        pid = supervisor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(1.5)
        assert not supervisor.running
        await supervisor.stop()
        return supervisor

    supervisor = asyncio.run(scenario())
    assert exits and exits[0].restarting
    # 1.5 s with delays of 0.05, 0.2, 0.4, 0.4 ... and some ms per failed try: a few tries
    assert 2 <= supervisor.restarts <= 8
    assert supervisor.last_error is not None and "not ready" in supervisor.last_error
