"""The operations report: event volume, dead-letter rate and API response times per day."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.models import DeadLetter, StoredEvent
from analytics.reports.query import (
    Query,
    Row,
    daily_counters,
    day_of,
    iso_day,
    money,
    percentile,
    rate,
)


def operations(session: Session, q: Query) -> list[Row]:
    events = daily_counters(session, q, "events")
    letter_day = day_of(DeadLetter.received_at)
    letters = {
        iso_day(d): int(n)
        for d, n in session.execute(
            select(letter_day, func.count())
            .where(DeadLetter.tenant_id == q.tenant, q.between(DeadLetter.received_at))
            .group_by(letter_day)
        )
    }
    timings: dict[str, list[float]] = defaultdict(list)
    for at, ms in session.execute(
        select(StoredEvent.occurred_at, StoredEvent.response_time_ms).where(
            StoredEvent.tenant_id == q.tenant,
            StoredEvent.response_time_ms.is_not(None),
            q.between(StoredEvent.occurred_at),
        )
    ):
        timings[at.date().isoformat()].append(float(ms or 0))
    rows = []
    for d in sorted(set(events) | set(letters)):
        count, dead = events.get(d, (0, 0))[0], letters.get(d, 0)
        p50, p95 = percentile(timings.get(d, []), 0.5), percentile(timings.get(d, []), 0.95)
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
