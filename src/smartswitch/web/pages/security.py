"""The Security page: this node's guard against password guessing (registrar/guard.py), the
accounts under attack or in back-off, the banned addresses, the counters."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from smartswitch.registrar.guard import REASONS, AccountStatus, SourceGuard
from smartswitch.web.pages.common import page_user, render
from smartswitch.web.shared import web_of

router = APIRouter()


def _when(at: float | None, now: float) -> str:
    if at is None:
        return ""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = round(at - now)
    return f"{stamp} UTC (in {delta} s)" if delta >= 0 else f"{stamp} UTC ({-delta} s ago)"


def account_row(status: AccountStatus, now: float) -> dict[str, Any]:
    return {
        "account": status.account,
        "state": status.state.value,
        "failures": status.failures,
        "backoff_until": _when(status.backoff_until, now),
        "level": status.level,
        "refused": status.refused,
        "trusted": status.trusted,
        "last_failure": _when(status.last_failure, now),
    }


def guard_summary(guard: SourceGuard, now: float) -> dict[str, Any]:
    stats = guard.stats
    return {
        "accounts": [account_row(s, now) for s in guard.accounts(now)],
        "bans": [
            {"source": ip, "until": _when(until, now)}
            for ip, until in sorted(guard.bans(now).items(), key=lambda item: item[1])
        ],
        "failures": [(reason, guard.failure_reasons.get(reason, 0)) for reason in REASONS],
        "refused": [
            ("source-banned", stats["banned"]),
            ("throttled", stats["throttled"]),
            ("account-backoff", stats["backoff_refused"]),
        ],
        "settings": guard.settings,
    }


@router.get("/security")
async def security_page(request: Request) -> Response:
    user, session = await page_user(request)
    guard = web_of(request).guard()
    summary = guard_summary(guard, time.time()) if guard is not None else None
    return render(request, "security.html", user, session, guard=summary)
