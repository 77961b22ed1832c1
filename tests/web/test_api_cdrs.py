"""CDRs (filters, pages, CSV), calls in progress with hang-up, the dashboard numbers, /metrics."""

from __future__ import annotations

import asyncio
import wave
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from smartswitch.media.archive import recording_name
from smartswitch.model.cdr import HangupSide
from smartswitch.store.database import create_engine, session_factory
from smartswitch.store.schema import CdrRow
from smartswitch.web.ports import Counters, Delivery, MediaRelayState, MediaState

from .conftest import WebEnv
from .fakes import live_call
from .test_api_config import CUSTOMER, SUPPLIER, setup_world

NOW = datetime.now(UTC).replace(microsecond=0)


def add_cdrs(url: str, rows: list[dict[str, Any]]) -> None:
    async def insert() -> None:
        engine = create_engine(url)
        async with session_factory(engine)() as session, session.begin():
            for i, values in enumerate(rows):
                base: dict[str, Any] = {
                    "id": f"01TEST{i:020d}",
                    "call_id": f"call-{i}@test",
                    "node": "test1",
                    "customer_peer_id": 1,
                    "customer_account_id": 1,
                    "caller": "15550000000",
                    "callee": "15551234567",
                    "caller_out": "15550000000",
                    "callee_out": "15551234567",
                    "setup_time": NOW - timedelta(minutes=10),
                    "answer_time": NOW - timedelta(minutes=10) + timedelta(seconds=2),
                    "end_time": NOW - timedelta(minutes=9),
                    "duration_ms": 58_000,
                    "billed_seconds": 60,
                    "price": Decimal("0.0100"),
                    "cost": Decimal("0.0050"),
                    "profit": Decimal("0.0050"),
                    "currency": "USD",
                    "supplier_peer_id": 2,
                    "supplier_account_id": 2,
                    "sip_code": 200,
                    "sip_reason": "OK",
                    "hangup_side": HangupSide.CALLER,
                    "hangup_reason": "BYE",
                }
                session.add(CdrRow(**{**base, **values}))
        await engine.dispose()

    asyncio.run(insert())


def world_with_cdrs(web: WebEnv) -> None:
    setup_world(web)
    assert web.post("/api/v1/peers", {"name": "c1", **CUSTOMER}).status_code == 201
    assert web.post("/api/v1/peers", {"name": "s1", **SUPPLIER}).status_code == 201
    add_cdrs(
        web.url,
        [
            {},
            {"callee": "4420711111", "callee_out": "4420711111"},
            {
                "sip_code": 486,
                "sip_reason": "Busy Here",
                "answer_time": None,
                "duration_ms": 0,
                "billed_seconds": 0,
                "supplier_peer_id": None,
                "supplier_account_id": None,
                "price": Decimal(0),
                "cost": Decimal(0),
                "profit": Decimal(0),
            },
            {"setup_time": NOW - timedelta(days=2), "end_time": NOW - timedelta(days=2)},
        ],
    )


def test_cdr_filters_and_pages(web: WebEnv) -> None:
    world_with_cdrs(web)
    everything = web.get("/api/v1/cdrs").json()
    assert everything["total"] == 4
    newest = everything["cdrs"][0]  # newest first; the busy call has the highest id
    assert newest["customer_peer"] == "c1" and newest["sip_code"] == 486
    answered = everything["cdrs"][1]
    assert answered["price"] == "0.0100" and answered["supplier_peer"] == "s1"
    assert web.get("/api/v1/cdrs", params={"sip_code": 486}).json()["total"] == 1
    assert web.get("/api/v1/cdrs", params={"number": "44207"}).json()["total"] == 1
    since = (NOW - timedelta(hours=1)).isoformat()
    assert web.get("/api/v1/cdrs", params={"since": since}).json()["total"] == 3
    until = (NOW - timedelta(days=1)).isoformat()
    assert web.get("/api/v1/cdrs", params={"until": until}).json()["total"] == 1
    assert web.get("/api/v1/cdrs", params={"peer": "s1"}).json()["total"] == 3
    assert web.get("/api/v1/cdrs", params={"peer": "c1"}).json()["total"] == 4
    assert web.get("/api/v1/cdrs", params={"peer": "nobody"}).json()["total"] == 0
    page = web.get("/api/v1/cdrs", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 4 and len(page["cdrs"]) == 2
    bad = web.get("/api/v1/cdrs", params={"sip_code": 99, "since": "yesterday"})
    assert bad.status_code == 422
    assert {d["loc"][-1] for d in bad.json()["detail"]} == {"sip_code", "since"}


def test_cdr_csv_export(web: WebEnv) -> None:
    world_with_cdrs(web)
    response = web.get("/api/v1/cdrs.csv", params={"sip_code": 200})
    assert response.status_code == 200
    lines = response.text.strip().splitlines()
    assert lines[0].startswith("id,call_id,node,setup_time")
    assert len(lines) == 1 + 3


def test_calls_in_progress_and_hangup(web: WebEnv) -> None:
    web.node.live_calls["abc@caller;tag=1"] = live_call("abc@caller;tag=1")
    calls = web.get("/api/v1/calls").json()
    assert calls == [
        {
            "key": "abc@caller;tag=1",
            "call_id": "abc@caller",
            "state": "connected",
            "caller": "15550000000",
            "callee": "15551234567",
            "supplier": "s1",
            "age_seconds": 60.0,
            "talk_seconds": 58.0,
        }
    ]
    assert web.delete("/api/v1/calls/abc@caller;tag=1", role="read-only").status_code == 403
    assert web.delete("/api/v1/calls/abc@caller;tag=1").status_code == 204
    assert web.node.hung_up == ["abc@caller;tag=1"]
    assert web.delete("/api/v1/calls/abc@caller;tag=1").status_code == 404
    assert web.get("/api/v1/status").json()["calls_in_progress"] == 0


def test_calls_in_progress_longest_first(web: WebEnv) -> None:
    web.node.live_calls["new"] = live_call("new", age_seconds=2.0, talk_seconds=None)
    web.node.live_calls["old"] = live_call("old", age_seconds=90.0)
    assert [c["key"] for c in web.get("/api/v1/calls").json()] == ["old", "new"]


def test_metrics(web: WebEnv) -> None:
    web.node.stats = Counters(
        calls=7,
        answered=5,
        rejected=1,
        supplier_attempts={"s1": (6, 5)},
        messages_in={"INVITE": 7, "200": 5},
        messages_out={"INVITE": 6, "486": 1},
        delivery=Delivery(outbox_depth=3, delivered=4, last_delivery=None, last_error="down"),
        flood={"admitted": 9, "dropped": 4, "oversize": 2, "trimmed": 1},
        flood_dropped={"INVITE": 3, "OPTIONS": 1},
        flood_sources=5,
    )
    web.node.live_calls["x"] = live_call("x")
    web.node.config_version = 12
    text = web.client.get("/metrics").text
    for line in (
        "smartswitch_calls_in_progress 1",
        "smartswitch_call_attempts_total 7",
        "smartswitch_calls_answered_total 5",
        'smartswitch_peer_attempts_total{peer="s1"} 6',
        'smartswitch_peer_answers_total{peer="s1"} 5',
        'smartswitch_sip_messages_total{direction="in",method="INVITE"} 7',
        'smartswitch_sip_messages_total{direction="out",code="486"} 1',
        "# TYPE smartswitch_calls_per_second gauge",
        "smartswitch_outbox_depth 3",
        "smartswitch_cdrs_delivered_total 4",
        "smartswitch_delivery_failing 1",
        "smartswitch_config_version 12",
        "smartswitch_flood_admitted_total 9",
        'smartswitch_flood_dropped_total{method="INVITE"} 3',
        'smartswitch_flood_dropped_total{method="OPTIONS"} 1',
        "smartswitch_flood_oversize_dropped_total 2",
        "smartswitch_flood_challenges_trimmed_total 1",
        "smartswitch_flood_sources 5",
    ):
        assert line in text.splitlines(), line


def test_dashboard_numbers(web: WebEnv) -> None:
    world_with_cdrs(web)
    web.client.post("/login", data={"username": "admin", "password": "correct horse battery"})
    page = web.client.get("/").text
    assert "calls in progress" in page and "<svg" in page
    live = web.client.get("/dashboard/live", headers={"HX-Request": "true"}).text
    assert "67%" in live  # 2 of the 3 calls of the last hour answered
    assert "58 s" in live  # ACD


def test_media_down_on_metrics_and_dashboard(web: WebEnv) -> None:
    relay = MediaRelayState("local", "127.0.0.1:2223", 1, False, 0, 9, 3, 0, "no answer")
    web.node.stats = Counters(media=MediaState(up=False, relays=(relay,), failed_calls=2))
    lines = web.client.get("/metrics").text.splitlines()
    for line in (
        "smartswitch_media_up 0",
        'smartswitch_media_relay_up{relay="local"} 0',
        'smartswitch_media_timeouts_total{relay="local"} 3',
        "smartswitch_media_calls_failed_total 2",
    ):
        assert line in lines, line
    web.client.post("/login", data={"username": "admin", "password": "correct horse battery"})
    live = web.client.get("/dashboard/live", headers={"HX-Request": "true"}).text
    assert "Media relay: <strong>down</strong>" in live and "no answer" in live
    web.node.stats = Counters(media=MediaState(up=True, relays=(replace(relay, up=True),)))
    assert "smartswitch_media_up 1" in web.client.get("/metrics").text.splitlines()
    live = web.client.get("/dashboard/live", headers={"HX-Request": "true"}).text
    assert "Media relay: <strong>up</strong>" in live


def test_cdr_links_its_recording_which_plays_and_downloads(web: WebEnv) -> None:
    world_with_cdrs(web)
    # Filed by another node, synced here: in that node's folder.
    directory = Path(web.node.config.data_dir) / "recordings" / "node-b"
    directory.mkdir(parents=True, exist_ok=True)
    name = recording_name("call-0@test")
    with wave.open(str(directory / f"{name}.wav"), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(16000))
    (directory / f"{name}.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    (directory / "secret.wav").write_bytes(b"not a recording of a call")
    web.client.post("/login", data={"username": "admin", "password": "correct horse battery"})
    page = web.client.get("/cdrs").text
    assert page.count("<audio") == 1 and f'src="/recordings/{name}.wav"' in page
    played = web.client.get(f"/recordings/{name}.wav")
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    assert played.content.startswith(b"RIFF")
    download = web.client.get(f"/recordings/{name}.pcap?download=1")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    for bad in (
        "..%2Fsmartswitch.db",
        "call-1@test.wav",
        "x.txt",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.wav",
    ):
        assert web.client.get(f"/recordings/{bad}").status_code == 404, bad
    # The API: the CDR's link, and the same bytes from it.
    (cdr,) = [c for c in web.get("/api/v1/cdrs").json()["cdrs"] if c["recording"]]
    assert cdr["call_id"] == "call-0@test"
    assert cdr["recording"] == f"/api/v1/recordings/{name}.wav"
    assert web.get(cdr["recording"]).content == played.content
    assert web.get(f"/api/v1/recordings/{name}.pcap?download=true").content.startswith(b"\xd4")
    assert web.get("/api/v1/recordings/call-1@test.wav").status_code == 404
