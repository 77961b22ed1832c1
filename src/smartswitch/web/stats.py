"""Live numbers for the dashboard and /metrics, and the charts drawn from them.

A sampler reads the B2BUA's counters every ``SAMPLE_SECONDS`` into a ring buffer covering the
last hour (calls per second, calls in progress): plain integer reads, nothing on the call path.
ASR and ACD come from the CDRs of the last hour (admin.reports.last_hour).  Charts are inline
SVG drawn here, so the page needs no JavaScript library.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from smartswitch.admin.reports import Bucket
from smartswitch.registrar.guard import REASONS
from smartswitch.web.ports import FileSyncState, NodePort

SAMPLE_SECONDS = 5.0
HOUR_SAMPLES = int(3600 / SAMPLE_SECONDS)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall clock
    calls_total: int
    in_progress: int


def calls_in_progress(node: NodePort) -> int:
    return node.counters().in_progress


class Sampler:
    def __init__(self, node: NodePort) -> None:
        self.node = node
        self.samples: deque[Sample] = deque(maxlen=HOUR_SAMPLES + 1)
        self.task: asyncio.Task[None] | None = None

    def sample(self, now: float | None = None) -> None:
        counters = self.node.counters()
        self.samples.append(
            Sample(time.time() if now is None else now, counters.calls, counters.in_progress)
        )

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="web-sampler")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample missed is no reason to stop
                self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def cps(self) -> float:
        """Call attempts per second over the last two samples (the last ~5-10 s)."""
        if len(self.samples) < 2:
            return 0.0
        a, b = self.samples[-2], self.samples[-1]
        return max(0, b.calls_total - a.calls_total) / max(b.at - a.at, 1e-6)

    def cps_series(self) -> list[tuple[float, float]]:
        points = list(self.samples)
        return [
            (b.at, max(0, b.calls_total - a.calls_total) / max(b.at - a.at, 1e-6))
            for a, b in itertools.pairwise(points)
        ]

    def in_progress_series(self) -> list[tuple[float, float]]:
        return [(s.at, float(s.in_progress)) for s in self.samples]


def svg_chart(
    points: list[tuple[str, float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 420,
    height: int = 140,
    bars: bool = False,
    ceiling: float | None = None,
) -> str:
    """A small line or bar chart as SVG text; ``points`` are (label, value or None)."""
    pad_l, pad_r, pad_t, pad_b = 40, 8, 22, 20
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [v for _, v in points if v is not None]
    top = max(values) if values else 0.0
    top = top * 1.15 if top > 0 else 1.0
    if ceiling is not None:  # a percentage never needs an axis past 100
        top = min(top, ceiling)
    n = max(len(points), 1)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_esc(title)}">',
        f'<text x="{pad_l}" y="14" class="chart-title">{_esc(title)}</text>',
        f'<line x1="{pad_l}" y1="{pad_t + inner_h}" x2="{width - pad_r}" y2="{pad_t + inner_h}" '
        'class="axis"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" class="tick" text-anchor="end">{_num(top)}{unit}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + inner_h}" class="tick" text-anchor="end">0</text>',
    ]

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad_l + (inner_w * (i + 0.5) / n)
        return x, pad_t + inner_h - inner_h * v / top

    if bars:
        w = max(inner_w / n * 0.7, 1.0)
        for i, (_label, v) in enumerate(points):
            if v is None:
                continue
            x, y = xy(i, v)
            out.append(
                f'<rect x="{x - w / 2:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{pad_t + inner_h - y:.1f}" class="bar"><title>{_num(v)}{unit}</title></rect>'
            )
    else:
        path = " ".join(
            f"{x:.1f},{y:.1f}"
            for x, y in (xy(i, v) for i, (_, v) in enumerate(points) if v is not None)
        )
        if path:
            out.append(f'<polyline points="{path}" class="line"/>')
    if not values:
        out.append(
            f'<text x="{pad_l + inner_w / 2}" y="{pad_t + inner_h / 2}" class="empty" '
            'text-anchor="middle">no calls yet</text>'
        )
    for i in (0, n // 2, n - 1) if points else ():
        x, _ = xy(i, 0)
        out.append(
            f'<text x="{x:.1f}" y="{height - 5}" class="tick" text-anchor="middle">'
            f"{_esc(points[i][0])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _label(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M")


def dashboard_charts(sampler: Sampler, buckets: list[Bucket]) -> dict[str, str]:
    def series(pairs: list[tuple[float, float]]) -> list[tuple[str, float | None]]:
        return [(_label(at), v) for at, v in pairs] or [(_label(time.time()), None)]

    hours = [(b.start.strftime("%H:%M"), b.asr) for b in buckets]
    acd = [(b.start.strftime("%H:%M"), b.acd) for b in buckets]
    return {
        "cps": svg_chart(series(sampler.cps_series()), title="Calls per second"),
        "in_progress": svg_chart(series(sampler.in_progress_series()), title="Calls in progress"),
        "asr": svg_chart(hours, title="ASR, last hour (%)", unit="%", bars=True, ceiling=100.0),
        "acd": svg_chart(acd, title="ACD, last hour (s)", unit="s", bars=True),
    }


# --------------------------------------------------------------------------------------------
# Prometheus text format (version 0.0.4)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(node: NodePort, sampler: Sampler, sync: FileSyncState | None = None) -> str:
    """The node's metrics; ``sync``: the file sync's state (read before, it is async)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:g}")

    counters = node.counters()
    metric(
        "smartswitch_calls_in_progress",
        "gauge",
        "Calls in progress.",
        [("", counters.in_progress)],
    )
    metric(
        "smartswitch_call_attempts_total",
        "counter",
        "INVITEs that started a call.",
        [("", counters.calls)],
    )
    metric(
        "smartswitch_calls_answered_total", "counter", "Calls answered.", [("", counters.answered)]
    )
    metric(
        "smartswitch_calls_rejected_total",
        "counter",
        "Calls refused by routing or billing.",
        [("", counters.rejected)],
    )
    metric(
        "smartswitch_calls_per_second",
        "gauge",
        "Call attempts per second, last seconds.",
        [("", round(sampler.cps(), 3))],
    )
    by_peer = sorted(counters.supplier_attempts.items())
    metric(
        "smartswitch_peer_attempts_total",
        "counter",
        "Call attempts sent to a supplier.",
        [(f'{{peer="{_label_value(p)}"}}', c[0]) for p, c in by_peer],
    )
    metric(
        "smartswitch_peer_answers_total",
        "counter",
        "Calls a supplier answered.",
        [(f'{{peer="{_label_value(p)}"}}', c[1]) for p, c in by_peer],
    )
    media = counters.media
    if media is not None:
        metric(
            "smartswitch_media_up",
            "gauge",
            "1 when a media relay (rtpengine) takes new calls, 0 when media is down.",
            [("", 1 if media.up else 0)],
        )
        relays = [(f'{{relay="{_label_value(r.name)}"}}', r) for r in media.relays]
        metric(
            "smartswitch_media_relay_up",
            "gauge",
            "1 when this rtpengine answers its pings.",
            [(label, 1 if r.up else 0) for label, r in relays],
        )
        metric(
            "smartswitch_media_relay_calls",
            "gauge",
            "Relayed sessions held on this rtpengine.",
            [(label, r.calls) for label, r in relays],
        )
        metric(
            "smartswitch_media_requests_total",
            "counter",
            "ng requests sent to this rtpengine.",
            [(label, r.requests) for label, r in relays],
        )
        metric(
            "smartswitch_media_timeouts_total",
            "counter",
            "ng requests this rtpengine never answered.",
            [(label, r.timeouts) for label, r in relays],
        )
        metric(
            "smartswitch_media_errors_total",
            "counter",
            "ng requests this rtpengine answered with an error.",
            [(label, r.errors) for label, r in relays],
        )
        metric(
            "smartswitch_media_calls_failed_total",
            "counter",
            "Relayed calls refused for want of a relay, or whose SDP the relay refused.",
            [("", media.failed_calls)],
        )
        metric(
            "smartswitch_media_calls_lost_total",
            "counter",
            "Calls ended because their rtpengine died.",
            [("", media.lost_calls)],
        )
        metric(
            "smartswitch_media_restarts_total",
            "counter",
            "Restarts of the node's own rtpengine.",
            [("", media.restarts)],
        )
    messages: list[tuple[str, float]] = []
    for direction, counts in (("in", counters.messages_in), ("out", counters.messages_out)):
        for kind, count in sorted(counts.items()):
            label = "code" if kind.isdigit() else "method"
            messages.append((f'{{direction="{direction}",{label}="{_label_value(kind)}"}}', count))
    metric(
        "smartswitch_sip_messages_total",
        "counter",
        "SIP messages by direction and method (requests) or code (responses).",
        messages,
    )
    if counters.bindings is not None:
        metric(
            "smartswitch_registrations", "gauge", "Registered contacts.", [("", counters.bindings)]
        )
    flood = counters.flood
    if flood is not None:
        metric(
            "smartswitch_flood_admitted_total",
            "counter",
            "Requests from unidentified sources answered (within their rate).",
            [("", flood.get("admitted", 0))],
        )
        metric(
            "smartswitch_flood_dropped_total",
            "counter",
            "Requests from unidentified sources dropped over their rate, by method.",
            [
                (f'{{method="{_label_value(m)}"}}', n)
                for m, n in sorted(counters.flood_dropped.items())
            ],
        )
        metric(
            "smartswitch_flood_oversize_dropped_total",
            "counter",
            "Answers to unidentified UDP sources not sent: bigger than the request.",
            [("", flood.get("oversize", 0))],
        )
        metric(
            "smartswitch_flood_challenges_trimmed_total",
            "counter",
            "Challenges sent with fewer algorithms to fit the request's size.",
            [("", flood.get("trimmed", 0))],
        )
        metric(
            "smartswitch_flood_sources",
            "gauge",
            "Unidentified source addresses with a rate bucket now.",
            [("", counters.flood_sources)],
        )
    guard = node.registrar.guard if node.registrar is not None else None
    if guard is not None:
        now = time.time()
        stats = guard.stats
        metric(
            "smartswitch_digest_failures_total",
            "counter",
            "Failed digest answers (REGISTER and INVITE), by reason.",
            [(f'{{reason="{r}"}}', guard.failure_reasons.get(r, 0)) for r in REASONS],
        )
        metric(
            "smartswitch_auth_refused_total",
            "counter",
            "Requests refused before their credentials were checked, by reason.",
            [
                ('{reason="source-banned"}', stats["banned"]),
                ('{reason="throttled"}', stats["throttled"]),
                ('{reason="account-backoff"}', stats["backoff_refused"]),
            ],
        )
        metric(
            "smartswitch_guard_cluster_events_total",
            "counter",
            "Failed answers and successes other nodes saw, received over the cluster bus "
            "(counted here as if local).",
            [
                ('{kind="failure"}', stats["remote_failures"]),
                ('{kind="success"}', stats["remote_successes"]),
            ],
        )
        metric(
            "smartswitch_accounts_under_attack",
            "gauge",
            "Accounts under attack or in back-off now (this node).",
            [("", guard.under_attack(now))],
        )
        metric(
            "smartswitch_account_backoffs_total",
            "counter",
            "Back-offs started (an account's credentials refused from untrusted sources).",
            [("", stats["backoffs"])],
        )
        metric(
            "smartswitch_sources_banned",
            "gauge",
            "Source addresses banned now.",
            [("", len(guard.bans(now)))],
        )
        metric(
            "smartswitch_source_bans_total",
            "counter",
            "Source bans started.",
            [("", stats["bans"])],
        )
    delivery = counters.delivery
    if delivery is not None:
        metric(
            "smartswitch_outbox_depth",
            "gauge",
            "CDRs not yet delivered to the database.",
            [("", delivery.outbox_depth)],
        )
        metric(
            "smartswitch_cdrs_delivered_total",
            "counter",
            "CDRs the forwarder delivered to the database since the node started.",
            [("", delivery.delivered)],
        )
        metric(
            "smartswitch_delivery_failing",
            "gauge",
            "1 while the last delivery to the database failed.",
            [("", 1 if delivery.last_error else 0)],
        )
    capture = node.capture_state()
    if capture is not None:
        metric(
            "smartswitch_capture_error",
            "gauge",
            "1 while captures cannot be written (a full or unwritable directory): calls go "
            "on uncaptured.",
            [("", 1 if capture.error else 0)],
        )
        metric(
            "smartswitch_capture_calls_active",
            "gauge",
            "Calls being captured now.",
            [("", capture.calls_active)],
        )
        for name, help_, value in (
            (
                "calls_captured",
                "Calls whose capture was handed to the writer.",
                capture.calls_captured,
            ),
            (
                "calls_skipped",
                "Calls not captured because of the error state.",
                capture.calls_skipped,
            ),
            ("files_written", "Capture files written.", capture.files_written),
            ("write_errors", "Capture files that could not be written.", capture.write_errors),
            ("messages_dropped", "Captured messages not written.", capture.messages_dropped),
            ("files_deleted", "Capture files deleted by retention.", capture.files_deleted),
            ("hep_sent", "Messages sent as HEP3.", capture.hep_sent),
            ("hep_errors", "HEP3 messages that could not be sent.", capture.hep_errors),
        ):
            metric(f"smartswitch_capture_{name}_total", "counter", help_, [("", value)])
    if sync is not None:
        metric(
            "smartswitch_filesync_daemon_up",
            "gauge",
            "1 while this node's rsync daemon runs.",
            [("", 1 if sync.daemon_running else 0)],
        )
        peers = [(f'{{peer="{_label_value(p.name)}"}}', p) for p in sync.peers]
        metric(
            "smartswitch_filesync_backlog",
            "gauge",
            "Files waiting to be copied to another node.",
            [(label, p.queued) for label, p in peers],
        )
        metric(
            "smartswitch_filesync_pushed_total",
            "counter",
            "Files copied to another node and verified there.",
            [(label, p.pushed) for label, p in peers],
        )
        metric(
            "smartswitch_filesync_failing",
            "gauge",
            "1 while copying to that node fails.",
            [(label, 1 if p.failing else 0) for label, p in peers],
        )
    version = node.config_version
    if version is not None:
        metric(
            "smartswitch_config_version",
            "gauge",
            "The configuration version the node runs on.",
            [("", version)],
        )
    return "\n".join(lines) + "\n"
