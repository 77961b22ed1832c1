"""Captures in the web: the CDR lists link to a capture this node holds, the UI and the API
serve it (nobody else), and /metrics and the dashboard show capture errors and the file
sync's backlog per peer."""

from __future__ import annotations

from pathlib import Path

from smartswitch.web.ports import CaptureState, FileSyncState, SyncPeer

from .conftest import WebEnv
from .test_api_cdrs import world_with_cdrs
from .test_ui import login

CDR_ID = "01TEST00000000000000000000"  # the first CDR world_with_cdrs adds (node test1)


def capture_state(error: str | None = None) -> CaptureState:
    return CaptureState("all", error, 1, 10, 2, 10, 0, 0, 3, 0, 0)


def test_cdrs_link_to_the_capture_this_node_holds_and_it_downloads(
    web: WebEnv, tmp_path: Path
) -> None:
    world_with_cdrs(web)
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(b"\xd4\xc3\xb2\xa1 a pcap")
    web.node.captures[("test1", CDR_ID)] = pcap
    rows = {c["id"]: c for c in web.get("/api/v1/cdrs").json()["cdrs"]}
    assert rows[CDR_ID]["capture"] == f"/api/v1/captures/test1/{CDR_ID}.pcap"
    assert [c for c in rows.values() if c["capture"]] == [rows[CDR_ID]]
    got = web.get(rows[CDR_ID]["capture"])
    assert got.status_code == 200 and got.content == pcap.read_bytes()
    assert "attachment" in got.headers["content-disposition"]
    assert web.get("/api/v1/captures/test1/01TEST00000000000000000001.pcap").status_code == 404
    assert web.client.get(rows[CDR_ID]["capture"]).status_code == 401  # no token
    # The page: a link, and the download for a logged-in user only.
    page_link = f"/captures/test1/{CDR_ID}.pcap"
    assert web.client.get(page_link, follow_redirects=False).status_code in (302, 303, 401)
    login(web, "readonly")
    assert f'href="{page_link}"' in web.client.get("/cdrs").text
    assert web.client.get(page_link).content == pcap.read_bytes()


def test_metrics_and_dashboard_show_capture_errors_and_the_sync_backlog(web: WebEnv) -> None:
    world_with_cdrs(web)
    web.node.capture = capture_state("cannot write captures to /x: No space left on device")
    web.node.file_sync = FileSyncState(
        True,
        None,
        (
            SyncPeer("node2", 0, None, 12, 0, False, None),
            SyncPeer("node3", 7, 1.0, 5, 4, True, "rsync: connection refused"),
        ),
    )
    metrics = web.client.get("/metrics").text
    assert "smartswitch_capture_error 1" in metrics
    assert "smartswitch_capture_files_deleted_total 3" in metrics
    assert 'smartswitch_filesync_backlog{peer="node2"} 0' in metrics
    assert 'smartswitch_filesync_backlog{peer="node3"} 7' in metrics
    assert 'smartswitch_filesync_failing{peer="node3"} 1' in metrics
    login(web)
    page = web.client.get("/dashboard/live").text
    assert "Call capture stopped" in page and "No space left on device" in page
    assert "connection refused" in page
    web.node.capture = capture_state()
    assert "smartswitch_capture_error 0" in web.client.get("/metrics").text
    assert "Call capture stopped" not in web.client.get("/dashboard/live").text
