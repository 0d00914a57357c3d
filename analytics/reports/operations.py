"""The operations report: event volume, dead-letter rate and API response times per day.

Response-time percentiles come from the ``daily_percentiles`` rollup (refreshed for
the days that received events before it is read), so the report reads a row per day
instead of every raw event of the tenant's history.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.ingest.changes import ALL_EVENTS
from analytics.models import DeadLetter
from analytics.reports.query import (
    Query,
    Row,
    daily_counters,
    daily_percentiles,
    day_of,
    iso_day,
    money,
    rate,
)


def operations(session: Session, q: Query) -> list[Row]:
    events = daily_counters(session, q, ALL_EVENTS)
    letter_day = day_of(DeadLetter.received_at)
    letters = {
        iso_day(d): int(n)
        for d, n in session.execute(
            select(letter_day, func.count())
            .where(DeadLetter.tenant_id == q.tenant, q.between(DeadLetter.received_at))
            .group_by(letter_day)
        )
    }
    timings = daily_percentiles(session, q, "response_ms")
    rows = []
    for d in sorted(set(events) | set(letters)):
        count, dead = events.get(d, (0, 0))[0], letters.get(d, 0)
        day = timings.get(d)
        p50, p95 = (day.p50, day.p95) if day else (None, None)
        rows.append(
            {
                "date": d,
                "events": count,
                "dead_letters": dead,
                "error_rate": rate(dead, count + dead) or 0.0,
                "p50_response_ms": money(p50) if p50 is not None else None,
                "p95_response_ms": money(p95) if p95 is not None else None,
            }
        )
    return rows
