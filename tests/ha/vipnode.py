"""One switch node as far as the shared IP goes, run inside a lab host.

``python -m ha.vipnode DATA_DIR SETTINGS_JSON`` starts :mod:`ha.sipresponder` (the node's SIP
loop, in this process group) and a :class:`~smartswitch.cluster.vip.KeepalivedSupervisor`
(keepalived in its own process group, as on a real node), then reports on stdout, one JSON
object a line:

- ``{"event": "started", "keepalived_pid": ..., "responder_pid": ..., "stale_removed": ...}``
- ``{"event": "state", "state": ..., "previous": ..., "at": ..., "mono": ...}`` for each change
  the supervisor reports (its ``on_state`` callback);
- ``{"event": "status", ...}`` when asked, ``{"event": "stopped"}`` at the end.

Every line carries ``"status"``, the supervisor's :class:`~smartswitch.cluster.vip.VipStatus`
as the Cluster page gets it. Commands on stdin, one a line: ``status``, ``peers A,B`` (reload
with another member list), ``stop``. End of stdin or SIGTERM stops it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from smartswitch.cluster.vip import KeepalivedSupervisor, VipEvent, VipSettings, with_peers


def emit(event: str, supervisor: KeepalivedSupervisor, **fields: Any) -> None:
    line = {"event": event, "mono": time.monotonic(), **fields}
    line["status"] = supervisor.status().as_dict()
    print(json.dumps(line), flush=True)


async def serve(data_dir: Path, settings: VipSettings) -> int:
    responder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ha.sipresponder",
            settings.node_name,
            settings.sip_check_host,
            settings.shared_ip,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert responder.stdout is not None
    responder.stdout.readline()  # "listening": its sockets are bound
    supervisor = KeepalivedSupervisor(
        settings, data_dir=data_dir, retry_delay=0.2, max_retry_delay=2.0
    )

    def on_state(event: VipEvent) -> None:
        emit(
            "state",
            supervisor,
            state=event.state.value,
            previous=event.previous.value,
            at=event.at,
            at_mono=event.at_monotonic,
        )

    supervisor.on_state.append(on_state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await supervisor.start()
    emit(
        "started",
        supervisor,
        keepalived_pid=supervisor.pid,
        responder_pid=responder.pid,
        stale_removed=supervisor.stale_removed,
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := (await reader.readline()).decode().strip():
            if line == "status":
                emit("status", supervisor)
            elif line.startswith("peers "):
                new = with_peers(supervisor.settings, line.split(None, 1)[1].split(","))
                await supervisor.reload(new)
                emit("reloaded", supervisor, peers=list(new.peers))
            elif line == "stop":
                break
        stop.set()

    task = asyncio.create_task(commands())
    await stop.wait()
    task.cancel()
    await supervisor.stop()
    responder.kill()
    responder.wait()
    emit("stopped", supervisor)
    return 0


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0])
    settings_fields = json.loads(argv[1])
    settings_fields["peers"] = tuple(settings_fields["peers"])
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    return asyncio.run(serve(data_dir, VipSettings(**settings_fields)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
