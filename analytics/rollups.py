"""Rollups: window metrics materialised from the per-event aggregates, recomputed idempotently.

Daily, weekly and monthly active users need distinct counts over sliding windows,
so they are computed here and stored in ``active_users_daily`` instead of at query
time. Every rollup recomputes a window of days from ``user_activity`` and upserts
the result (removing rows that became empty), so running it twice, or from two
beats at once, leaves the same rows.

Exact percentiles (a day's API response times and session durations) cannot be
summed from partial aggregates either, so :func:`percentiles` keeps them per day in
``daily_percentiles``, recomputing a day whole from its raw events and sessions.
The retention, conversion and logins rollups (:mod:`analytics.report_rollups`) are
refreshed with them.

Writers mark each day that received events in ``rollup_dirty_days``;
:func:`refresh_dirty` recomputes every day those events can change (a day's
activity counts in the MAU of the 29 days after it). Beat calls it every few
minutes, and reports call it before they read, so late events and backfills show
up without anyone remembering to run a rollup.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.orm import Session

from analytics import report_rollups, stock_months
from analytics.config import get_settings
from analytics.db import Writes, insert_for, is_retryable, one_at_a_time, upsert_many
from analytics.ingest.changes import PAYMENT_FAILED, PAYMENT_OUTCOMES, PAYMENT_PROCESSED
from analytics.models import (
    ActiveUsersDaily,
    Alert,
    DailyPercentiles,
    MetricCounter,
    RollupDirtyDay,
    StoredEvent,
    UserActivity,
    UserSession,
)
from analytics.reports.query import money, percentile

log = logging.getLogger(__name__)

#: The longest window: a day's activity counts in the MAU of this many days.
MAU_DAYS = 30
WAU_DAYS = 7
WINDOWS = {"dau": 1, "wau": WAU_DAYS, "mau": MAU_DAYS}


#: The days rollups can compute: the window arithmetic looks 30 days back and one
#: day ahead, which must stay inside the calendar. Events are refused outside the
#: configured event-time window (EVENT_TIME_MIN, EVENT_TIME_MAX) long before these.
_EARLIEST = date.min + timedelta(days=MAU_DAYS + 1)
_LATEST = date.max - timedelta(days=1)


def _clamped(first: date, last: date) -> tuple[date, date]:
    return max(first, _EARLIEST), min(last, _LATEST)


def days(first: date, last: date) -> Iterable[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def active_users(session: Session, tenant: str, first: date, last: date) -> int:
    """Recompute DAU, WAU and MAU of ``tenant`` for every day in ``[first, last]``."""
    first, last = _clamped(first, last)
    if first > last:
        return 0
    since = first - timedelta(days=MAU_DAYS - 1)
    by_day: dict[date, set[str]] = defaultdict(set)
    day_of = func.date(UserActivity.hour)
    for day, user in session.execute(
        select(day_of, UserActivity.user_id)
        .where(
            UserActivity.tenant_id == tenant,
            UserActivity.hour >= _midnight(since),
            UserActivity.hour < _midnight(last + timedelta(days=1)),
        )
        .group_by(day_of, UserActivity.user_id)
    ):
        by_day[date.fromisoformat(str(day)[:10])].add(user)
    # Sliding windows: how many days of each window each user was active on.
    weekly: Counter[str] = Counter()
    monthly: Counter[str] = Counter()
    for day in days(since, first - timedelta(days=1)):
        monthly.update(by_day.get(day, ()))
        if (first - day).days <= WAU_DAYS:
            weekly.update(by_day.get(day, ()))
    rows: list[dict[str, Any]] = []
    for day in days(first, last):
        today = by_day.get(day, set())
        weekly.update(today)
        monthly.update(today)
        weekly.subtract(by_day.get(day - timedelta(days=WAU_DAYS), ()))
        monthly.subtract(by_day.get(day - timedelta(days=MAU_DAYS), ()))
        weekly, monthly = +weekly, +monthly  # drop users whose count fell to zero
        if monthly:
            rows.append(
                {
                    "tenant_id": tenant,
                    "day": day,
                    "dau": len(today),
                    "wau": len(weekly),
                    "mau": len(monthly),
                }
            )
    window = and_(
        ActiveUsersDaily.tenant_id == tenant,
        ActiveUsersDaily.day >= first,
        ActiveUsersDaily.day <= last,
    )
    kept = [row["day"] for row in rows]
    session.execute(delete(ActiveUsersDaily).where(window, ActiveUsersDaily.day.not_in(kept)))
    if rows:

        def build(insert: Any) -> Any:
            stmt = insert(ActiveUsersDaily)
            return stmt.on_conflict_do_update(
                index_elements=["tenant_id", "day"],
                set_={name: stmt.excluded[name] for name in ("dau", "wau", "mau")},
            )

        upsert_many(session, ActiveUsersDaily, build, rows)
    return len(rows)


#: The measures of ``daily_percentiles``: each one's value, timestamp and tenant columns.
MEASURES: dict[str, tuple[Any, Any, Any]] = {
    "response_ms": (StoredEvent.response_time_ms, StoredEvent.occurred_at, StoredEvent.tenant_id),
    "session_seconds": (UserSession.duration_seconds, UserSession.ended_at, UserSession.tenant_id),
}


def percentiles(session: Session, tenant: str, first: date, last: date) -> int:
    """Recompute every measure's daily percentiles of ``tenant`` for ``[first, last]``.

    Read from the rows that keep every value (raw events, sessions): a day's exact
    percentiles cannot be merged from partial ones, so a day is recomputed whole.
    """
    first, last = _clamped(first, last)
    if first > last:
        return 0
    rows: list[dict[str, Any]] = []
    for measure, (value, at, owner) in MEASURES.items():
        values: dict[date, list[Any]] = defaultdict(list)
        for when, v in session.execute(
            select(at, value).where(
                owner == tenant,
                value.is_not(None),
                at >= _midnight(first),
                at < _midnight(last + timedelta(days=1)),
            )
        ):
            values[when.date()].append(v)
        rows += [
            {
                "tenant_id": tenant,
                "measure": measure,
                "day": day,
                "count": len(day_values),
                "total": sum((Decimal(str(v)) for v in day_values), Decimal(0)),
                **{
                    f"p{n}": Decimal(str(money(percentile(day_values, n / 100))))
                    for n in (50, 90, 95)
                },
            }
            for day, day_values in sorted(values.items())
        ]
    window = and_(
        DailyPercentiles.tenant_id == tenant,
        DailyPercentiles.day >= first,
        DailyPercentiles.day <= last,
    )
    kept = [(row["measure"], row["day"]) for row in rows]
    stale = session.execute(
        select(DailyPercentiles.measure, DailyPercentiles.day).where(window)
    ).all()
    gone = [tuple(row) for row in stale if tuple(row) not in set(kept)]
    if gone:
        session.execute(
            delete(DailyPercentiles).where(
                window, tuple_(DailyPercentiles.measure, DailyPercentiles.day).in_(gone)
            )
        )
    if rows:

        def build(insert: Any) -> Any:
            stmt = insert(DailyPercentiles)
            return stmt.on_conflict_do_update(
                index_elements=["tenant_id", "measure", "day"],
                set_={
                    name: stmt.excluded[name] for name in ("count", "total", "p50", "p90", "p95")
                },
            )

        upsert_many(session, DailyPercentiles, build, rows)
    return len(rows)


def day_rollups(session: Session, tenant: str, first: date, last: date) -> int:
    """Recompute every per-day rollup of ``tenant`` for ``[first, last]``; the rows written.

    The monthly stock rollup is recomputed for the months of those days.
    """
    return (
        active_users(session, tenant, first, last)
        + percentiles(session, tenant, first, last)
        + report_rollups.refresh(session, tenant, days(*_clamped(first, last)))
        + stock_months.recompute(session, tenant, first, last)
    )


def mark_dirty(
    session: Session, pairs: Iterable[tuple[str, date]], writes: Writes | None = None
) -> None:
    """Note that these ``(tenant, day)`` pairs received events (called by the writer).

    With ``writes``, the upsert is held there, for the caller to send.
    """
    rows = [{"tenant_id": t, "day": d, "generation": 1} for t, d in sorted(set(pairs))]
    if not rows:
        return
    held = writes if writes is not None else Writes(session)
    held.upsert(
        RollupDirtyDay,
        lambda insert: insert(RollupDirtyDay).on_conflict_do_update(
            index_elements=["tenant_id", "day"],
            set_={"generation": RollupDirtyDay.generation + 1},
        ),
        rows,
    )
    if writes is None:
        held.send()


def spans(dirty_days: Iterable[date], reach: int = MAU_DAYS) -> list[tuple[date, date]]:
    """The day ranges a set of changed days affects, overlapping ranges merged."""
    merged: list[tuple[date, date]] = []
    for day in sorted(set(dirty_days)):
        end = day + timedelta(days=reach - 1) if day <= _LATEST - timedelta(days=reach) else _LATEST
        if merged and day <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((day, end))
    return merged


PAYMENT_ALERT = "payment_failure_rate"


@dataclass(frozen=True)
class PaymentAlertPolicy:
    """When an hour's payments fail often enough to alert."""

    min_payments: int = 20
    failure_rate: float = 0.25

    @classmethod
    def from_settings(cls) -> PaymentAlertPolicy:
        settings = get_settings()
        return cls(settings.payment_alert_min_payments, settings.payment_alert_failure_rate)


def payment_alerts(session: Session, tenant: str, policy: PaymentAlertPolicy | None = None) -> int:
    """Recompute a tenant's payment-failure alerts from its final hourly payment counts.

    Walking the hours with payments in order: an hour with at least
    ``min_payments`` payments failing at ``failure_rate`` or more opens an alert
    (unless one is open); an hour below the rate resolves it. Computed from the
    counters as they stand, so the result does not depend on how events were
    batched or in which order they arrived, nor on how many recomputations run.
    """
    policy = policy or PaymentAlertPolicy.from_settings()
    # Beat's refresh and a report's can recompute a tenant's alerts at once; the
    # second waits, then finds the first one's rows and has nothing to change.
    one_at_a_time(session, f"{PAYMENT_ALERT}:{tenant}")
    hours: dict[datetime, dict[str, int]] = defaultdict(dict)
    for hour, outcome, count in session.execute(
        select(MetricCounter.hour, MetricCounter.dimension, MetricCounter.count).where(
            MetricCounter.tenant_id == tenant, MetricCounter.metric == PAYMENT_OUTCOMES
        )
    ):
        hours[hour][outcome] = int(count)
    wanted: list[dict[str, Any]] = []
    for hour in sorted(hours):
        failed = hours[hour].get(PAYMENT_FAILED, 0)
        total = failed + hours[hour].get(PAYMENT_PROCESSED, 0)
        if not total:
            continue
        share = failed / total
        is_open = bool(wanted) and wanted[-1]["resolved_at"] is None
        if share >= policy.failure_rate and total >= policy.min_payments and not is_open:
            wanted.append(
                {
                    "tenant_id": tenant,
                    "alert_key": f"{PAYMENT_ALERT}@{hour:%Y-%m-%dT%H}",
                    "alert_type": PAYMENT_ALERT,
                    "severity": "critical",
                    "message": (
                        f"Payment failure rate {share:.0%} in the hour from {hour:%Y-%m-%d %H:00} "
                        f"UTC: {failed} of {total} payments failed"
                    ),
                    "created_at": hour,
                    "resolved_at": None,
                    "event_id": None,
                }
            )
        elif share < policy.failure_rate and is_open:
            wanted[-1]["resolved_at"] = hour
    mine = and_(Alert.tenant_id == tenant, Alert.alert_type == PAYMENT_ALERT)
    have = session.execute(
        select(Alert.alert_key, Alert.created_at, Alert.resolved_at, Alert.message).where(mine)
    ).all()
    as_rows = sorted(
        (a["alert_key"], a["created_at"], a["resolved_at"], a["message"]) for a in wanted
    )
    if sorted(tuple(row) for row in have) != as_rows:
        session.execute(delete(Alert).where(mine))
        if wanted:
            session.execute(insert_for(session)(Alert), wanted)
    return len(wanted)


def refresh_dirty(session: Session, tenant: str | None = None) -> int:
    """Recompute every rollup day that events arrived for since the last refresh."""
    stmt = select(RollupDirtyDay.tenant_id, RollupDirtyDay.day, RollupDirtyDay.generation)
    if tenant is not None:
        stmt = stmt.where(RollupDirtyDay.tenant_id == tenant)
    seen = session.execute(stmt).all()
    by_tenant: dict[str, list[date]] = defaultdict(list)
    for t, day, _ in seen:
        by_tenant[t].append(day)
    recomputed = 0
    failed: set[str] = set()
    for t, changed in by_tenant.items():
        # One tenant's failure must not stop every other tenant's refresh (beat
        # runs this every few minutes for all of them): its days stay dirty.
        try:
            with session.begin_nested():
                for first, last in spans(changed):
                    active_users(session, t, first, last)
                    recomputed += (last - first).days + 1
                # A day's percentiles depend on that day alone.
                for first, last in spans(changed, reach=1):
                    percentiles(session, t, first, last)
                report_rollups.refresh(session, t, changed)
                stock_months.refresh(session, t, changed)
                payment_alerts(session, t)
        except Exception as exc:
            if is_retryable(exc):
                raise
            log.exception("rollups of tenant %r failed; its days stay dirty", t)
            failed.add(t)
    done = [tuple(row) for row in seen if row[0] not in failed]
    if done:
        session.execute(
            delete(RollupDirtyDay).where(
                tuple_(RollupDirtyDay.tenant_id, RollupDirtyDay.day, RollupDirtyDay.generation).in_(
                    done
                )
            )
        )
    return recomputed


def active_tenants(session: Session, first: date, last: date) -> list[str]:
    """Tenants with any user activity that counts in the windows of ``[first, last]``."""
    first, last = _clamped(first, last)
    return list(
        session.execute(
            select(UserActivity.tenant_id)
            .where(
                UserActivity.hour >= _midnight(first - timedelta(days=MAU_DAYS - 1)),
                UserActivity.hour < _midnight(last + timedelta(days=1)),
            )
            .distinct()
            .order_by(UserActivity.tenant_id)
        ).scalars()
    )


def recompute(
    session: Session, first: date, last: date, tenant: str | None = None
) -> dict[str, int]:
    """Recompute ``[first, last]`` for one tenant or every tenant with activity then."""
    tenants = [tenant] if tenant else active_tenants(session, first, last)
    return {t: day_rollups(session, t, first, last) for t in tenants}


def active_users_report(session: Session, q: Any, window: str) -> list[dict[str, Any]]:
    """Rows of the dau, wau or mau report (``q`` is a ``reports.Query``)."""
    refresh_dirty(session, q.tenant)
    bounds = session.execute(
        select(func.min(UserActivity.hour), func.max(UserActivity.hour)).where(
            UserActivity.tenant_id == q.tenant
        )
    ).one()
    if bounds[0] is None:
        return []
    since = q.since or bounds[0].date()
    until = q.until or bounds[1].date()
    column = getattr(ActiveUsersDaily, window)
    return [
        {"date": day.isoformat(), "active_users": int(value)}
        for day, value in session.execute(
            select(ActiveUsersDaily.day, column)
            .where(
                ActiveUsersDaily.tenant_id == q.tenant,
                ActiveUsersDaily.day >= since,
                ActiveUsersDaily.day <= until,
                column > 0,
            )
            .order_by(ActiveUsersDaily.day)
        )
    ]
