"""The query layer every report shares: the question (:class:`Query`), its errors, the row type,
and the helpers that read counters and round numbers.

Rounding happens here and nowhere else: reports round through :func:`money` and :func:`rate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from analytics.db import dialect_of
from analytics.errors import AnalyticsError
from analytics.models import DailyPercentiles, MetricCounter

Row = dict[str, Any]
CENT = Decimal("0.01")
RATE = Decimal("0.0001")


class ReportError(AnalyticsError):
    """A report was asked for with arguments it cannot answer."""


@dataclass(frozen=True)
class Query:
    """What every report is asked: whose data, which days, and the report's own options."""

    tenant: str
    since: date | None = None
    until: date | None = None
    limit: int = 10
    days: int = 30
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    default_currency: str = "USD"

    def __post_init__(self) -> None:
        if not self.tenant:
            raise ReportError("a report needs a tenant (--tenant)")
        if self.since and self.until and self.since > self.until:
            raise ReportError(f"--since {self.since} is after --until {self.until}")

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.since, time()) if self.since else None

    @property
    def end(self) -> datetime | None:
        """The first instant after the range (``--until`` is inclusive)."""
        return datetime.combine(self.until + timedelta(days=1), time()) if self.until else None

    def between(self, column: Any) -> ColumnElement[bool]:
        """``column`` (a timestamp) within the range."""
        conditions = []
        if self.start is not None:
            conditions.append(column >= self.start)
        if self.end is not None:
            conditions.append(column < self.end)
        return and_(True, *conditions)

    def on_days(self, column: Any) -> ColumnElement[bool]:
        """``column`` (a date) within the range."""
        conditions = []
        if self.since is not None:
            conditions.append(column >= self.since)
        if self.until is not None:
            conditions.append(column <= self.until)
        return and_(True, *conditions)


# ----------------------------------------------------------------------- helpers


#: Report columns whose values come from :func:`money`: tables and CSV print them with two
#: decimals.
TWO_DECIMAL_COLUMNS = frozenset(
    {
        "revenue",
        "refunds",
        "net_revenue",
        "aov",
        "avg_duration_seconds",
        "p50_seconds",
        "p90_seconds",
        "avg_restock_hours",
        "p50_response_ms",
        "p95_response_ms",
    }
)


def money(value: Any) -> float:
    return float(Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP))


def rate(numerator: Any, denominator: Any) -> float | None:
    if not denominator:
        return None
    return float((Decimal(numerator) / Decimal(denominator)).quantize(RATE, rounding=ROUND_HALF_UP))


def iso_day(value: Any) -> str:
    """A day from whatever the dialect returns for ``date(...)``: a date or a string."""
    return str(value)[:10]


def iso_time(value: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` of a UTC time (stored times are naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(timespec="seconds") + "Z"  # twice as fast as strftime
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: Sequence[Decimal | float], fraction: float) -> Decimal | None:
    """Linear interpolation between closest ranks (numpy's default, ``percentile_cont``)."""
    if not values:
        return None
    # Sorted as they come (a float's shortest repr orders as the float does), and only the
    # two values interpolated between made Decimal: a report over 10,000 values spent most
    # of its time making 10,000 Decimals from strings.
    ordered = sorted(values)
    position = Decimal(str(fraction)) * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    below, above = Decimal(str(ordered[low])), Decimal(str(ordered[high]))
    return below + (above - below) * (position - low)


def day_of(column: Any) -> Any:
    """SQL for the UTC day of a timestamp column (``date()`` on both dialects)."""
    return func.date(column)


def iso_time_of(session: Session, column: Any) -> Any:
    """SQL for :func:`iso_time` of ``column``: the database writes the text.

    For reports of many rows (a year of a busy tenant's alerts is tens of thousands):
    the driver then neither builds a ``datetime`` a row nor Python formats it.
    """
    if dialect_of(session) == "sqlite":
        return func.strftime("%Y-%m-%dT%H:%M:%SZ", column)
    return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')


def hour_of_day(session: Session, column: Any) -> Any:
    if dialect_of(session) == "sqlite":
        return func.cast(func.strftime("%H", column), MetricCounter.count.type)
    return func.cast(func.extract("hour", column), MetricCounter.count.type)


def counters(session: Session, q: Query, metric: str, *group: Any) -> Select[Any]:
    return (
        select(*group, func.sum(MetricCounter.count), func.sum(MetricCounter.total))
        .where(
            MetricCounter.tenant_id == q.tenant,
            MetricCounter.metric == metric,
            q.between(MetricCounter.hour),
        )
        .group_by(*group)
    )


def daily_counters(session: Session, q: Query, metric: str) -> dict[str, tuple[int, Decimal]]:
    day = day_of(MetricCounter.hour)
    return {
        iso_day(d): (int(count), total or Decimal(0))
        for d, count, total in session.execute(counters(session, q, metric, day))
    }


def tenants(session: Session, since: date | None = None, until: date | None = None) -> list[str]:
    """Tenants with stored events in a range (for backfills over every tenant)."""
    q = Query("*", since, until)
    return list(
        session.execute(
            select(MetricCounter.tenant_id)
            .distinct()
            .where(MetricCounter.metric == "events", q.between(MetricCounter.hour))
            .order_by(MetricCounter.tenant_id)
        ).scalars()
    )


def refreshed(session: Session, tenant: str) -> None:
    """Bring ``tenant``'s rollups up to date with its events, before a report reads them.

    Only the days that received events since the last refresh are recomputed. The
    import is here, not at the top: ``analytics.rollups`` imports the reports.
    """
    from analytics import rollups

    rollups.refresh_dirty(session, tenant)


def daily_percentiles(session: Session, q: Query, measure: str) -> dict[str, DailyPercentiles]:
    """A measure's rollup rows by ISO day (refreshing the days that received events first)."""
    refreshed(session, q.tenant)
    return {
        row.day.isoformat(): row
        for row in session.scalars(
            select(DailyPercentiles).where(
                DailyPercentiles.tenant_id == q.tenant,
                DailyPercentiles.measure == measure,
                q.on_days(DailyPercentiles.day),
            )
        )
    }
