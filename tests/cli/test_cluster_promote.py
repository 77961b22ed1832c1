"""``smartswitch cluster promote`` when this node's own database does not answer (it was
killed, its host is down): a sentence naming the database and what to do, exit 1, never a
traceback and never the database password."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from smartswitch.cli.cluster import promote
from smartswitch.runtime.config import NodeConfig


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_promote_with_this_nodes_database_down_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    config = NodeConfig(
        data_dir=tmp_path,
        node_name="node1",
        cluster_secret="s" * 32,
        db_scheme="replication",
        database_url=f"mysql://root:hunter2-secret@127.0.0.1:{port}/smartswitch",
    )
    out = io.StringIO()
    code = promote(config, "node2", "", out)
    err = capsys.readouterr().err
    assert code == 1
    assert f"this node's database at 127.0.0.1:{port} does not answer" in err, err
    assert "Traceback" not in err and "hunter2" not in err + out.getvalue()
