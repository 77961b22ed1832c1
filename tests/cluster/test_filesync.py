"""File sync between nodes with real rsync daemons.

The daemon's config (this commit); the queue, the pushers and three nodes with real daemons
come next.
"""

from __future__ import annotations

from pathlib import Path

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
