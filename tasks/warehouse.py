"""The warehouse sink as a task: beat sends one every WAREHOUSE_INTERVAL to the ``warehouse`` queue.

Thin like the others: it runs the domain's :func:`analytics.warehouse.deliver` for
up to one interval's worth of batches (a longer backlog continues in the next
run) and decides nothing itself: the sink keeps its lease, backoff and mark in
the database, so a run that fails, or a worker that dies, needs no Celery retry.
A database error is retried like the other tasks' errors.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from analytics.config import get_settings
from analytics.db import get_engine, is_retryable, session_factory
from tasks.app import app
from tasks.ingest import backoff
from tasks.queues import WAREHOUSE_DELIVER_TASK

log = logging.getLogger(__name__)

#: The process's BigQuery table (client and "table exists" checked once per process).
_destination: Any = None


def _table() -> Any:
    global _destination
    if _destination is None:
        from analytics.warehouse.bigquery import BigQueryTable

        _destination = BigQueryTable(get_settings())
    return _destination


@app.task(
    name=WAREHOUSE_DELIVER_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=5,
    ignore_result=True,
)
def deliver(self: Task, max_batches: int | None = None) -> dict[str, Any]:
    """Copy newly stored events to the warehouse (nothing when none is configured)."""
    from analytics.warehouse import deliver as run_sink

    settings = get_settings()
    if not settings.warehouse_enabled:
        return {"state": "off"}
    try:
        run = run_sink(
            session_factory(get_engine()),
            settings,
            _table(),
            budget=max(settings.warehouse_interval, 1.0) * 6,
            max_batches=max_batches,
        )
    except Exception as exc:
        if not is_retryable(exc):
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None
    if run.sent or run.rejected or run.error:
        log.info(
            "warehouse: %s, %d rows sent, %d refused%s",
            run.state,
            run.sent,
            run.rejected,
            f" ({run.error})" if run.error else "",
        )
    return {"state": run.state, "sent": run.sent, "rejected": run.rejected}
