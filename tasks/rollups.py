"""Rollup tasks: beat's periodic refresh and close-out, and the per-day task backfills send.

Every task recomputes a window from the aggregates and upserts it, so a task that
runs twice, or alongside a beat that covers the same days, leaves the same rows.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from celery import Task

from analytics import rollups
from analytics.config import get_settings
from analytics.db import get_engine, is_retryable, session_factory
from tasks.app import app
from tasks.ingest import backoff
from tasks.queues import (
    ROLLUP_CLOSE_DAY_TASK,
    ROLLUP_DAY_TASK,
    ROLLUP_REFRESH_TASK,
)

log = logging.getLogger(__name__)


def _today() -> date:
    return datetime.now(UTC).date()


def _in_transaction(task: Task, work: Any) -> Any:
    try:
        with session_factory(get_engine()).begin() as session:
            return work(session)
    except Exception as exc:
        if not is_retryable(exc):
            raise
        raise task.retry(exc=exc, countdown=backoff(task.request.retries)) from None


OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": 5,
}


@app.task(name=ROLLUP_DAY_TASK, ignore_result=False, **OPTIONS)
def rollup_day(self: Task, tenant: str, day: str) -> dict[str, Any]:
    """Recompute one tenant's rollups for one day (``YYYY-MM-DD``)."""
    when = date.fromisoformat(day)
    rows = _in_transaction(self, lambda s: rollups.day_rollups(s, tenant, when, when))
    return {"tenant": tenant, "day": day, "rows": rows}


@app.task(name=ROLLUP_REFRESH_TASK, ignore_result=True, **OPTIONS)
def refresh(self: Task) -> dict[str, int]:
    """Recompute days that received events, and the recent window for every tenant."""
    recent = get_settings().rollup_recent_days
    last = _today()
    first = last - timedelta(days=recent - 1)

    def work(session: Any) -> dict[str, int]:
        dirty = rollups.refresh_dirty(session)
        recomputed = rollups.recompute(session, first, last)
        return {"dirty_days": dirty, "tenants": len(recomputed)}

    result = _in_transaction(self, work)
    log.info("rollups refreshed: %(dirty_days)d dirty tenant-days, %(tenants)d tenants", result)
    return result


@app.task(name=ROLLUP_CLOSE_DAY_TASK, ignore_result=True, **OPTIONS)
def close_day(self: Task) -> dict[str, int]:
    """After midnight UTC: recompute the day that just ended, for every tenant."""
    yesterday = _today() - timedelta(days=1)
    recomputed = _in_transaction(self, lambda s: rollups.recompute(s, yesterday, yesterday))
    return {"tenants": len(recomputed)}
