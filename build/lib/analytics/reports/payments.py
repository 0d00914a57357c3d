"""Payment reports: payments (outcomes per day) and failure-reasons."""

from __future__ import annotations

from sqlalchemy.orm import Session

from analytics.models import MetricCounter
from analytics.reports.query import Query, Row, counters, daily_counters, rate


def payments(session: Session, q: Query) -> list[Row]:
    processed = daily_counters(session, q, "payments_processed")
    failed = daily_counters(session, q, "payments_failed")
    refunded = daily_counters(session, q, "payments_refunded")
    rows = []
    for d in sorted(set(processed) | set(failed) | set(refunded)):
        ok, bad = processed.get(d, (0, 0))[0], failed.get(d, (0, 0))[0]
        rows.append(
            {
                "date": d,
                "processed": ok,
                "failed": bad,
                "refunded": refunded.get(d, (0, 0))[0],
                "failure_rate": rate(bad, ok + bad) or 0.0,
            }
        )
    return rows


def failure_reasons(session: Session, q: Query) -> list[Row]:
    rows = [
        {"failure_reason": reason, "count": int(count)}
        for reason, count, _ in session.execute(
            counters(session, q, "payments_failed", MetricCounter.dimension)
        )
        if count
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["failure_reason"]))
