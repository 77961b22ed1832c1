"""File sync between nodes with real rsync daemons.

The daemon's config and the durable file queue; the pushers and three nodes with real
daemons come next.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from smartswitch.cluster.filequeue import FileQueue, Op
from smartswitch.cluster.rsyncd import DaemonFiles, render_config


def test_config_lists_the_allowed_hosts_or_none(tmp_path: Path) -> None:
    files = DaemonFiles.under(tmp_path)
    open_to_all = render_config(files, tmp_path / "files", None, uid=0, gid=0)
    assert "hosts allow" not in open_to_all and "hosts deny" not in open_to_all
    assert "write only = yes" in open_to_all and "auth users = smartswitch:rw" in open_to_all
    closed = render_config(files, tmp_path / "files", [], uid=1000, gid=1000)
    assert "hosts allow" not in closed and "hosts deny = *" in closed
    assert "use chroot = no" in closed
    some = render_config(files, tmp_path / "files", ["10.0.0.2", "10.0.0.1"], uid=0, gid=0)
    assert "hosts allow = 10.0.0.1 10.0.0.2" in some


def test_queue_keeps_a_row_added_again_while_it_was_pushed(tmp_path: Path) -> None:
    async def scenario() -> None:
        queue = FileQueue(tmp_path / "q.sqlite")
        await queue.open()
        queue.add(["captures/n1/a", "captures/n1/b"], ["n2", "n3"], now=100.0)
        await queue.flush()
        rows, later = await queue.due("n2", 100.0, 10)
        assert [r.relpath for r in rows] == ["captures/n1/a", "captures/n1/b"] and later is None
        queue.add(["captures/n1/a"], ["n2"], now=101.0)  # written again during the push
        await queue.flush()
        await queue.delivered([r.seq for r in rows])
        rows, _ = await queue.due("n2", 101.0, 10)
        assert [(r.relpath, r.added) for r in rows] == [("captures/n1/a", 101.0)]
        await queue.retry([(rows[0].seq, 150.0)])
        rows, later = await queue.due("n2", 101.0, 10)
        assert rows == [] and later == 150.0
        assert await queue.enqueue_missing(["captures/n1/a", "captures/n1/c"], "n2", 102.0) == 1
        queue.forget(["captures/n1/a"])
        queue.add(["captures/n1/d"], ["n3"], 103.0, Op.DELETE)
        await queue.flush()
        depth = await queue.depth()
        assert depth["n2"].queued == 1 and depth["n3"].queued == 2
        await queue.drop_peer("n3")
        assert "n3" not in await queue.depth()
        await queue.close()
        reopened = FileQueue(tmp_path / "q.sqlite")
        await reopened.open()
        assert [r.relpath for r in (await reopened.due("n2", 200.0, 10))[0]] == ["captures/n1/c"]
        await reopened.close()

    asyncio.run(scenario())
