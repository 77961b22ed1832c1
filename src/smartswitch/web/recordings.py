"""A call's recording: the WAV (and pcap) named by its CDR's Call-ID, from this node's copy.

A recording lives at ``<data_dir>/recordings/<node>/<escaped Call-ID>.wav`` (and ``.pcap``) on
the node that relayed the call and, copied by the file sync, on every other node: any node's UI
and API serve it from their own disk. The CDR lists carry ``recording``, the WAV's path, when
this node holds the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import HTTPException
from fastapi.responses import FileResponse

from smartswitch.media.archive import find_recording, recording_name


def directory(data_dir: str | Path) -> Path:
    return Path(data_dir) / "recordings"


def with_links(data_dir: str | Path, prefix: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` (CDR dicts) get ``recording``: the WAV's path under ``prefix`` (the file's
    name, which is the Call-ID URL-encoded: the URL decodes to the Call-ID), or None when this
    node holds no recording of the call."""
    root = directory(data_dir)
    for row in rows:
        call_id = str(row.get("call_id") or "")
        found = call_id and find_recording(root, call_id, ".wav") is not None
        name = recording_name(call_id)
        row["recording"] = f"{prefix}/recordings/{name}.wav" if found else None


def download(data_dir: str | Path, name: str, attachment: bool) -> FileResponse:
    """``name``: ``<Call-ID>.wav`` or ``<Call-ID>.pcap`` (as decoded from the URL): the WAV plays
    inline (an audio element), ``attachment`` downloads either."""
    call_id, dot, suffix = name.rpartition(".")
    if not dot or suffix not in ("wav", "pcap") or not call_id:
        raise HTTPException(404, "no such recording")
    # recording_name() escapes every "/" and "%": the file is in a recordings folder, whatever
    # asked.
    path = find_recording(directory(data_dir), call_id, f".{suffix}")
    if path is None:
        raise HTTPException(404, "no such recording")
    media_type = "audio/wav" if suffix == "wav" else "application/vnd.tcpdump.pcap"
    return FileResponse(
        path,
        media_type=media_type,
        filename=path.name if attachment else None,
        content_disposition_type="attachment" if attachment else "inline",
    )
