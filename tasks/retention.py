"""Raw-store maintenance tasks beat sends: partitions ahead of time, and the daily prune.

Both are safe to run twice (beat may send twice around a takeover): creating
partitions leaves existing ones alone, and a second prune finds nothing left to drop.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task

from analytics import retention
from analytics.config import get_settings
from analytics.warehouse import undelivered_floor
from tasks.app import app
from tasks.queues import RETENTION_PARTITIONS_TASK, RETENTION_PRUNE_TASK
from tasks.rollups import OPTIONS, _in_transaction

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@app.task(name=RETENTION_PARTITIONS_TASK, ignore_result=True, **OPTIONS)
def partitions(self: Task) -> dict[str, Any]:
    """Create this month's partition of events and RAW_PARTITIONS_AHEAD more; empty DEFAULT."""
    ahead = get_settings().raw_partitions_ahead
    made = _in_transaction(self, lambda s: retention.ensure_partitions(s, _now(), ahead))
    if made.created:
        log.info("retention: created %s (%d events moved)", ", ".join(made.created), made.moved)
    return {"created": made.created, "moved": made.moved}


@app.task(name=RETENTION_PRUNE_TASK, ignore_result=True, **OPTIONS)
def prune(self: Task) -> dict[str, Any]:
    """Drop raw events and dead letters older than RAW_RETENTION_DAYS; nothing when it is 0."""
    settings = get_settings()
    days = settings.raw_retention_days
    if not days:
        return {"skipped": "RAW_RETENTION_DAYS is 0: raw events are kept forever"}
    # With a warehouse sink, nothing it has not delivered yet is dropped.
    result = _in_transaction(
        self,
        lambda s: retention.prune(
            s, timedelta(days=days), _now(), keep_from_id=undelivered_floor(s, settings)
        ),
    )
    log.info(
        "retention: pruned %d events (%s) and %d dead letters older than %s; kept %s",
        result.events,
        ", ".join(result.dropped) or "no partition",
        result.dead_letters,
        result.cutoff,
        ", ".join(result.kept_for_warehouse) or "nothing for the warehouse",
    )
    return {
        "dropped": result.dropped,
        "events": result.events,
        "kept_for_warehouse": result.kept_for_warehouse,
    }
