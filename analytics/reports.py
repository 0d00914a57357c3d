"""Reports: one query layer for every metric, shared by the CLI (and later an HTTP API).

Each report reads indexed aggregate tables (never raw JSON), always for one
tenant, and returns a list of plain row dicts whose keys and order are the
contract of ``docs/reports.md``. Rounding happens here and nowhere else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, distinct, func, select
from sqlalchemy.orm import Session

from analytics.errors import AnalyticsError
from analytics.models import (
    Alert,
    DeadLetter,
    InventoryLevel,
    InventoryMovement,
    LoginLocation,
    MetricCounter,
    Order,
    Payment,
    ProductSale,
    Refund,
    StoredEvent,
    UserActivity,
    UserCohort,
    UserSession,
)

Row = dict[str, Any]
CENT = Decimal("0.01")
RATE = Decimal("0.0001")
#: Checkout abandonment: no processed payment within this long of the order.
ABANDONMENT_WINDOW = timedelta(hours=24)


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
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def percentile(values: Sequence[Decimal | float], fraction: float) -> Decimal | None:
    """Linear interpolation between closest ranks (numpy's default, ``percentile_cont``)."""
    if not values:
        return None
    ordered = sorted(Decimal(str(v)) for v in values)
    position = Decimal(str(fraction)) * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def day_of(column: Any) -> Any:
    """SQL for the UTC day of a timestamp column (``date()`` on both dialects)."""
    return func.date(column)


def hour_of_day(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
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


# ----------------------------------------------------------------------- reports


def revenue_by_day(session: Session, q: Query) -> list[Row]:
    day = day_of(MetricCounter.hour)
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"revenue": Decimal(0), "orders": 0, "refunds": Decimal(0)}
    )
    for d, currency, count, total in session.execute(
        counters(session, q, "revenue", day, MetricCounter.dimension)
    ):
        cell = cells[(iso_day(d), currency)]
        cell["revenue"] += total
        cell["orders"] += int(count)
    refund_day = day_of(Refund.refunded_at)
    currency = func.coalesce(Order.currency, Payment.currency, q.default_currency)
    refunds = (
        select(refund_day, currency, func.sum(Refund.amount))
        .select_from(Refund)
        .outerjoin(
            Order, and_(Order.tenant_id == Refund.tenant_id, Order.order_id == Refund.order_id)
        )
        .outerjoin(
            Payment,
            and_(Payment.tenant_id == Refund.tenant_id, Payment.payment_id == Refund.payment_id),
        )
        .where(Refund.tenant_id == q.tenant, q.between(Refund.refunded_at))
        .group_by(refund_day, currency)
    )
    for d, cur, total in session.execute(refunds):
        cells[(iso_day(d), cur)]["refunds"] += total
    rows = [
        {
            "date": d,
            "currency": cur,
            "revenue": money(cell["revenue"]),
            "orders": cell["orders"],
            "refunds": money(cell["refunds"]),
            "net_revenue": money(cell["revenue"] - cell["refunds"]),
        }
        for (d, cur), cell in cells.items()
    ]
    rows.sort(key=lambda r: r["currency"])
    rows.sort(key=lambda r: r["date"], reverse=True)
    return rows


def top_products(session: Session, q: Query) -> list[Row]:
    where = and_(ProductSale.tenant_id == q.tenant, q.on_days(ProductSale.day))
    totals = session.execute(
        select(
            ProductSale.product_id,
            ProductSale.currency,
            func.sum(ProductSale.units),
            func.sum(ProductSale.revenue),
        )
        .where(where)
        .group_by(ProductSale.product_id, ProductSale.currency)
    ).all()
    names: dict[str, tuple[datetime, str | None]] = {}
    for product, name, sold_at in session.execute(
        select(ProductSale.product_id, ProductSale.name, ProductSale.last_sold_at).where(
            where, ProductSale.name.is_not(None)
        )
    ):
        if product not in names or sold_at > names[product][0]:
            names[product] = (sold_at, name)
    by_currency: dict[str, list[Row]] = defaultdict(list)
    for product, currency, units, revenue in totals:
        by_currency[currency].append(
            {
                "product_id": product,
                "name": names.get(product, (None, None))[1],
                "currency": currency,
                "units_sold": int(units),
                "revenue": revenue,
            }
        )
    rows: list[Row] = []
    for currency in sorted(by_currency):
        ranked = sorted(by_currency[currency], key=lambda r: (-r["revenue"], r["product_id"]))
        for row in ranked[: q.limit]:
            rows.append({**row, "revenue": money(row["revenue"])})
    return rows


def activity_heatmap(session: Session, q: Query) -> list[Row]:
    hour = hour_of_day(session, MetricCounter.hour)
    events = {int(h): int(n) for h, n, _ in session.execute(counters(session, q, "events", hour))}
    user_hour = hour_of_day(session, UserActivity.hour)
    users: dict[int, int] = dict(
        session.execute(
            select(user_hour, func.count(distinct(UserActivity.user_id)))
            .where(UserActivity.tenant_id == q.tenant, q.between(UserActivity.hour))
            .group_by(user_hour)
        ).all()
    )
    return [
        {"hour": h, "active_users": int(users.get(h, 0)), "events": events[h]}
        for h in sorted(events)
        if events[h]
    ]


def _active_users(window: str) -> Callable[[Session, Query], list[Row]]:
    def report(session: Session, q: Query) -> list[Row]:
        from analytics import rollups

        return rollups.active_users_report(session, q, window)

    report.__name__ = window
    return report


def retention(session: Session, q: Query) -> list[Row]:
    members = {
        user: registered.date()
        for user, registered in session.execute(
            select(UserCohort.user_id, UserCohort.registered_at).where(
                UserCohort.tenant_id == q.tenant, q.between(UserCohort.registered_at)
            )
        )
    }
    if not members:
        return []
    if q.until is not None:
        last_day = q.until
    else:
        last_hour = session.execute(
            select(func.max(MetricCounter.hour)).where(
                MetricCounter.tenant_id == q.tenant, MetricCounter.metric == "events"
            )
        ).scalar_one()
        last_day = last_hour.date() if last_hour else max(members.values())
    active_day = day_of(UserActivity.hour)
    activity: dict[str, set[date]] = defaultdict(set)
    for user, d in session.execute(
        select(UserActivity.user_id, active_day)
        .join(
            UserCohort,
            and_(
                UserCohort.tenant_id == UserActivity.tenant_id,
                UserCohort.user_id == UserActivity.user_id,
            ),
        )
        .where(UserActivity.tenant_id == q.tenant, q.between(UserCohort.registered_at))
        .group_by(UserActivity.user_id, active_day)
    ):
        activity[user].add(date.fromisoformat(iso_day(d)))
    cohorts: dict[date, list[str]] = defaultdict(list)
    for user, registered in members.items():
        cohorts[registered - timedelta(days=registered.weekday())].append(user)
    last_week = last_day - timedelta(days=last_day.weekday())
    rows = []
    for week in sorted(cohorts):
        weeks = max(0, (last_week - week).days // 7)
        retained = [0] * (weeks + 1)
        for user in cohorts[week]:
            seen = {(d - week).days // 7 for d in activity.get(user, ()) if d >= week}
            for n in seen:
                if n <= weeks:
                    retained[n] += 1
        rows.append(
            {"cohort_week": week.isoformat(), "size": len(cohorts[week]), "retained": retained}
        )
    return rows


def aov(session: Session, q: Query) -> list[Row]:
    day = day_of(MetricCounter.hour)
    rows = [
        {
            "date": iso_day(d),
            "currency": currency,
            "orders": int(count),
            "aov": money(total / count),
        }
        for d, currency, count, total in session.execute(
            counters(session, q, "revenue", day, MetricCounter.dimension)
        )
        if count
    ]
    return sorted(rows, key=lambda r: (r["date"], r["currency"]))


def conversion(session: Session, q: Query) -> list[Row]:
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for created, paid in session.execute(
        select(Order.created_at, Order.paid_at).where(
            Order.tenant_id == q.tenant, Order.created_at.is_not(None), q.between(Order.created_at)
        )
    ):
        assert created is not None  # filtered above
        cell = days[created.date().isoformat()]
        cell[0] += 1
        cell[1] += paid is not None
        deadline = created + ABANDONMENT_WINDOW
        cell[2] += deadline <= q.now and (paid is None or paid > deadline)
    return [
        {
            "date": d,
            "orders": orders,
            "paid_orders": paid,
            "conversion_rate": rate(paid, orders),
            "abandoned": abandoned,
        }
        for d, (orders, paid, abandoned) in sorted(days.items())
    ]


def sessions(session: Session, q: Query) -> list[Row]:
    durations: dict[str, list[Decimal]] = defaultdict(list)
    for ended, seconds in session.execute(
        select(UserSession.ended_at, UserSession.duration_seconds).where(
            UserSession.tenant_id == q.tenant, q.between(UserSession.ended_at)
        )
    ):
        durations[ended.date().isoformat()].append(seconds)
    return [
        {
            "date": d,
            "sessions": len(values),
            "avg_duration_seconds": money(sum(values) / len(values)),
            "p50_seconds": money(percentile(values, 0.5)),
            "p90_seconds": money(percentile(values, 0.9)),
        }
        for d, values in sorted(durations.items())
    ]


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


def _login_users() -> Any:
    return func.count(distinct(LoginLocation.user_id)).filter(LoginLocation.user_id != "")


def geo(session: Session, q: Query) -> list[Row]:
    rows = [
        {"country": country, "city": city, "logins": int(logins), "users": int(users)}
        for country, city, logins, users in session.execute(
            select(
                LoginLocation.country,
                LoginLocation.city,
                func.sum(LoginLocation.logins),
                _login_users(),
            )
            .where(LoginLocation.tenant_id == q.tenant, q.on_days(LoginLocation.day))
            .group_by(LoginLocation.country, LoginLocation.city)
        )
    ]
    return sorted(rows, key=lambda r: (-r["logins"], r["country"], r["city"]))


def logins(session: Session, q: Query) -> list[Row]:
    rows = []
    for d, count, users in session.execute(
        select(LoginLocation.day, func.sum(LoginLocation.logins), _login_users())
        .where(LoginLocation.tenant_id == q.tenant, q.on_days(LoginLocation.day))
        .group_by(LoginLocation.day)
        .order_by(LoginLocation.day)
    ):
        rows.append(
            {
                "date": iso_day(d),
                "logins": int(count),
                "users": int(users),
                "logins_per_user": rate(int(count), users),
            }
        )
    return rows


@dataclass
class _Stock:
    """What the movements of one product at one location say."""

    on_hand: int | None = None
    low: int = 0
    out: int = 0
    cycles: list[float] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    in_range: bool = False


def _stock(session: Session, q: Query) -> dict[tuple[str, str], _Stock]:
    """Walk every stock movement up to the end of the range, in event-time order."""
    stmt = (
        select(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.kind,
            InventoryMovement.occurred_at,
            InventoryMovement.quantity_after,
        )
        .where(InventoryMovement.tenant_id == q.tenant)
        .order_by(
            InventoryMovement.product_id,
            InventoryMovement.location_id,
            InventoryMovement.occurred_at,
            InventoryMovement.id,
        )
    )
    if q.end is not None:
        stmt = stmt.where(InventoryMovement.occurred_at < q.end)
    stock: dict[tuple[str, str], _Stock] = defaultdict(_Stock)
    open_since: dict[tuple[str, str], datetime] = {}
    for product, location, kind, at, after in session.execute(stmt):
        key = (product, location)
        s = stock[key]
        if after is not None:
            s.on_hand = after
        in_range = q.start is None or at >= q.start
        if kind == "out_of_stock" and key not in open_since:
            open_since[key] = at
        elif kind == "restocked" and key in open_since:
            started = open_since.pop(key)
            if in_range:
                s.cycles.append((at - started).total_seconds() / 3600)
        if not in_range:
            continue
        s.in_range = True
        s.low += kind == "low_stock"
        s.out += kind == "out_of_stock"
        if after is not None:
            s.levels.append(after)
    return stock


def _skus(session: Session, tenant: str) -> dict[tuple[str, str], str | None]:
    return {
        (product, location): sku
        for product, location, sku in session.execute(
            select(InventoryLevel.product_id, InventoryLevel.location_id, InventoryLevel.sku).where(
                InventoryLevel.tenant_id == tenant
            )
        )
    }


def _by_sku(rows: list[Row]) -> list[Row]:
    return sorted(
        rows, key=lambda r: (r["sku"] is None, r["sku"] or "", r["product_id"], r["location_id"])
    )


def inventory(session: Session, q: Query) -> list[Row]:
    stock = _stock(session, q)
    skus = _skus(session, q.tenant)
    sold = {
        (product, location): int(units)
        for product, location, units in session.execute(
            select(ProductSale.product_id, ProductSale.location_id, func.sum(ProductSale.units))
            .where(ProductSale.tenant_id == q.tenant, q.on_days(ProductSale.day))
            .group_by(ProductSale.product_id, ProductSale.location_id)
        )
    }
    rows = []
    for (product, location), s in stock.items():
        if not s.in_range:
            continue
        average = Decimal(sum(s.levels)) / len(s.levels) if s.levels else None
        rows.append(
            {
                "product_id": product,
                "sku": skus.get((product, location)),
                "location_id": location,
                "on_hand": s.on_hand,
                "low_stock_events": s.low,
                "out_of_stock_events": s.out,
                "avg_restock_hours": money(Decimal(str(sum(s.cycles) / len(s.cycles))))
                if s.cycles
                else None,
                "turnover": rate(sold.get((product, location), 0), average) if average else None,
            }
        )
    return _by_sku(rows)


def dead_stock(session: Session, q: Query) -> list[Row]:
    whole = Query(q.tenant, None, q.until, now=q.now, default_currency=q.default_currency)
    stock = _stock(session, whole)
    skus = _skus(session, q.tenant)
    reference = q.end or q.now
    cutoff = reference - timedelta(days=q.days)
    last_sale: dict[tuple[str, str], datetime] = {}
    sales = (
        select(ProductSale.product_id, ProductSale.location_id, func.max(ProductSale.last_sold_at))
        .where(ProductSale.tenant_id == q.tenant, ProductSale.last_sold_at < reference)
        .group_by(ProductSale.product_id, ProductSale.location_id)
    )
    reported = select(
        InventoryLevel.product_id, InventoryLevel.location_id, InventoryLevel.last_sold_at
    ).where(
        InventoryLevel.tenant_id == q.tenant,
        InventoryLevel.last_sold_at.is_not(None),
        InventoryLevel.last_sold_at < reference,
    )
    for product, location, at in [*session.execute(sales), *session.execute(reported)]:
        key = (product, location)
        if at is not None and (key not in last_sale or at > last_sale[key]):
            last_sale[key] = at
    rows = []
    for key, s in stock.items():
        if not s.on_hand or s.on_hand <= 0:
            continue
        sold_at = last_sale.get(key)
        if sold_at is not None and sold_at >= cutoff:
            continue
        rows.append(
            {
                "product_id": key[0],
                "sku": skus.get(key),
                "location_id": key[1],
                "on_hand": s.on_hand,
                "last_sold_at": iso_time(sold_at),
            }
        )
    return _by_sku(rows)


def alerts(session: Session, q: Query) -> list[Row]:
    from analytics import rollups

    rollups.refresh_dirty(session, q.tenant)  # payment-failure alerts come from rollups
    return [
        {
            "created_at": iso_time(created),
            "alert_type": kind,
            "severity": severity,
            "message": message,
        }
        for created, kind, severity, message in session.execute(
            select(Alert.created_at, Alert.alert_type, Alert.severity, Alert.message)
            .where(Alert.tenant_id == q.tenant, q.between(Alert.created_at))
            .order_by(Alert.created_at.desc(), Alert.id.desc())
        )
    ]


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


@dataclass(frozen=True)
class Report:
    """A named report: the columns it prints and the function that computes its rows."""

    name: str
    columns: tuple[str, ...]
    compute: Callable[[Session, Query], list[Row]]
    summary: str


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


REPORTS: dict[str, Report] = {
    report.name: report
    for report in (
        Report("revenue-by-day", _columns("date, currency, revenue, orders, refunds, net_revenue"),
               revenue_by_day, "revenue, orders and refunds per day and currency"),
        Report("top-products", _columns("product_id, name, currency, units_sold, revenue"),
               top_products, "best-selling products by revenue, per currency (--limit)"),
        Report("activity-heatmap", _columns("hour, active_users, events"),
               activity_heatmap, "events and active users per UTC hour of day"),
        Report("dau", _columns("date, active_users"), _active_users("dau"), "daily active users"),
        Report("wau", _columns("date, active_users"), _active_users("wau"),
               "weekly active users (days d-6..d)"),
        Report("mau", _columns("date, active_users"), _active_users("mau"),
               "monthly active users (days d-29..d)"),
        Report("retention", _columns("cohort_week, size, retained"), retention,
               "weekly registration cohorts and how many were active each week after"),
        Report("aov", _columns("date, currency, orders, aov"), aov, "average order value"),
        Report("conversion", _columns("date, orders, paid_orders, conversion_rate, abandoned"),
               conversion, "orders paid, and checkouts abandoned (no payment within 24 h)"),
        Report("sessions",
               _columns("date, sessions, avg_duration_seconds, p50_seconds, p90_seconds"),
               sessions, "session durations from logouts"),
        Report("payments", _columns("date, processed, failed, refunded, failure_rate"),
               payments, "payment outcomes per day"),
        Report("failure-reasons", _columns("failure_reason, count"), failure_reasons,
               "why payments failed"),
        Report("geo", _columns("country, city, logins, users"), geo, "logins by place"),
        Report("inventory", _columns("product_id, sku, location_id, on_hand, low_stock_events, "
                                     "out_of_stock_events, avg_restock_hours, turnover"),
               inventory, "stock levels, stock-outs, restock cycle time and turnover"),
        Report("dead-stock", _columns("product_id, sku, location_id, on_hand, last_sold_at"),
               dead_stock, "stock on hand with no sale for --days days"),
        Report("alerts", _columns("created_at, alert_type, severity, message"), alerts,
               "low-stock, out-of-stock and payment-failure alerts"),
        Report("logins", _columns("date, logins, users, logins_per_user"), logins,
               "login frequency"),
        Report("operations", _columns("date, events, dead_letters, error_rate, p50_response_ms, "
                                      "p95_response_ms"),
               operations, "event volume, dead-letter rate and API response times"),
    )
}  # fmt: skip


def run(session: Session, name: str, query: Query) -> list[Row]:
    """The rows of report ``name`` for ``query``."""
    report = REPORTS.get(name)
    if report is None:
        raise ReportError(f"unknown report {name!r}; choose from {', '.join(REPORTS)}")
    return report.compute(session, query)


def tenants(session: Session, since: date | None = None, until: date | None = None) -> list[str]:
    """Tenants with stored events in a range (for backfills over every tenant)."""
    q = Query("*", since, until)
    return list(
        session.execute(
            select(distinct(MetricCounter.tenant_id))
            .where(MetricCounter.metric == "events", q.between(MetricCounter.hour))
            .order_by(MetricCounter.tenant_id)
        ).scalars()
    )
