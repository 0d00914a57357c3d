"""Report rollups: retention cohorts, conversion, logins and users' spans, so reports read days.

The retention, conversion and logins reports read every row of their range
(each active user-hour, each order, each user's logins of a day) and grow with a
tenant's history. Each has a per-day rollup here, recomputed for the days in
``rollup_dirty_days`` by :func:`analytics.rollups.refresh_dirty` (beat, and the
report itself before it reads) and by ``analytics backfill rollups``:

- ``cohort_sizes`` and ``cohort_weeks``: users registered per day, and of those how
  many were active in each week since. A dirty day recomputes its own cohort's size,
  the week it falls in (for every cohort), and every week in which a user registered
  on it was active (a registration that moves a user to another cohort changes the
  weeks of both).
- ``daily_conversion``: orders, paid and abandoned orders by the day they were created.
- ``daily_logins``: logins and distinct users per day.
- ``user_hours`` and ``city_users``: each user's first and last day active in an hour of
  the day, and logged in from a place (the activity heatmap's and geo's distinct users
  over all history); a dirty day extends the spans of its users.

A day's rollup depends on more than the events dated on it: a payment on a later day
changes its order's day; an earlier ``order.created`` or ``user.registered`` moves an
order or a user away from the day it was counted on. The writer asks
:func:`days_before` (the stored days that such changes move things away from) and
:func:`days_after` (the days of the orders a batch paid) which extra days to mark.

Every recomputation replaces the rows of its window (upserting the new, deleting the
rows that became empty), so running it twice, or from two refreshes at once, leaves
the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    and_,
    case,
    delete,
    distinct,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import Session

from analytics.db import (
    Writes,
    dialect_of,
    driver_rows,
    insert_for,
    keyed_rows_sql,
    statement,
    upsert_many,
)
from analytics.ingest.changes import COHORTS, ORDERS, Change, Upsert
from analytics.models import (
    CityLogin,
    CityUser,
    CohortSize,
    CohortWeek,
    DailyConversion,
    DailyLogins,
    LoginLocation,
    MetricCounter,
    Order,
    UserActivity,
    UserCohort,
    UserHour,
)
from analytics.reports.query import Query, Row, day_of, hour_of_day, iso_day, rate
from analytics.reports.sales import ABANDONMENT_WINDOW
from analytics.reports.users import login_users

Days = list[tuple[date, date]]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(iso_day(value))


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def runs(days: Iterable[date], step: int = 1) -> Days:
    """Days merged into inclusive ``(first, last)`` runs of days ``step`` apart."""
    merged: Days = []
    for day in sorted(set(days)):
        if merged and (day - merged[-1][1]).days <= step:
            merged[-1] = (merged[-1][0], day)
        else:
            merged.append((day, day))
    return merged


def _at(column: Any, spans: Days) -> ColumnElement[bool]:
    """A timestamp ``column`` on one of the days of ``spans``."""
    return or_(
        *(and_(column >= _midnight(a), column < _midnight(b + timedelta(days=1))) for a, b in spans)
    )


def _on(column: Any, spans: Days) -> ColumnElement[bool]:
    """A date ``column`` on one of the days of ``spans``."""
    return or_(*(column.between(a, b) for a, b in spans))


def week_of(session: Session, column: Any) -> Any:
    """SQL for the Monday of a timestamp's or a date's week (ISO weeks, UTC)."""
    if dialect_of(session) == "sqlite":
        return func.date(column, "-6 days", "weekday 1")
    return func.date(func.date_trunc("week", column))


def _replace(
    session: Session,
    model: Any,
    window: ColumnElement[bool],
    key: Sequence[str],
    rows: list[dict[str, Any]],
) -> int:
    """Make ``model``'s rows in ``window`` exactly ``rows``: upsert them, delete the rest."""
    columns = [getattr(model, name) for name in key]
    kept = {tuple(row[name] for name in key) for row in rows}
    gone = [
        tuple(r) for r in session.execute(select(*columns).where(window)) if tuple(r) not in kept
    ]
    if gone:
        session.execute(delete(model).where(window, tuple_(*columns).in_(gone)))
    if rows:
        values = [c.name for c in model.__table__.columns if c.name not in key]

        def build(insert: Any) -> Any:
            stmt = insert(model)
            return stmt.on_conflict_do_update(
                index_elements=list(key), set_={name: stmt.excluded[name] for name in values}
            )

        upsert_many(session, model, build, rows)
    return len(rows)


# ------------------------------------------------------------------ retention

#: Joins a user's activity to the user's registration.
_MEMBER = and_(
    UserCohort.tenant_id == UserActivity.tenant_id, UserCohort.user_id == UserActivity.user_id
)


def retention(session: Session, tenant: str, dirty: Iterable[date]) -> int:
    """Recompute the cohort sizes of the ``dirty`` days and every cohort week they affect."""
    changed = sorted(set(dirty))
    spans = runs(changed)
    if not spans:
        return 0
    registered = _at(UserCohort.registered_at, spans)
    reg_day = day_of(UserCohort.registered_at)
    sizes = [
        {"tenant_id": tenant, "day": _as_date(d), "users": int(n)}
        for d, n in session.execute(
            select(reg_day, func.count())
            .where(UserCohort.tenant_id == tenant, registered)
            .group_by(reg_day)
        )
    ]
    written = _replace(
        session,
        CohortSize,
        and_(CohortSize.tenant_id == tenant, _on(CohortSize.day, spans)),
        ("tenant_id", "day"),
        sizes,
    )
    # The weeks the dirty days fall in, and the weeks the users registered on them were
    # active in (only weeks from the earliest such cohort's Monday on count).
    week = week_of(session, UserActivity.hour)
    weeks = {_monday(d) for d in changed}
    weeks |= {
        _as_date(w)
        for w in session.scalars(
            select(week)
            .distinct()
            .join(UserCohort, _MEMBER)
            .where(
                UserActivity.tenant_id == tenant,
                UserActivity.hour >= _midnight(_monday(spans[0][0])),
                registered,
            )
        )
    }
    for first, last in runs(weeks, step=7):
        written += _cohort_weeks(session, tenant, first, last)
    return written


def _cohort_weeks(session: Session, tenant: str, first: date, last: date) -> int:
    """Recompute every cohort's active users in the weeks from Monday ``first`` to ``last``."""
    end = _midnight(last + timedelta(days=7))
    week = week_of(session, UserActivity.hour)
    reg_day = day_of(UserCohort.registered_at)
    rows = []
    for cohort_day, active_week, users in session.execute(
        select(reg_day, week, func.count(distinct(UserActivity.user_id)))
        .join(UserCohort, _MEMBER)
        .where(
            UserActivity.tenant_id == tenant,
            UserActivity.hour >= _midnight(first),
            UserActivity.hour < end,
            UserCohort.registered_at < end,
        )
        .group_by(reg_day, week)
    ):
        cohort_day, active_week = _as_date(cohort_day), _as_date(active_week)
        if active_week >= _monday(cohort_day):
            rows.append(
                {
                    "tenant_id": tenant,
                    "cohort_day": cohort_day,
                    "active_week": active_week,
                    "users": int(users),
                }
            )
    window = and_(CohortWeek.tenant_id == tenant, CohortWeek.active_week.between(first, last))
    return _replace(session, CohortWeek, window, ("tenant_id", "cohort_day", "active_week"), rows)


def retention_report(session: Session, q: Query) -> list[Row]:
    """Rows of the retention report: weekly cohorts (Monday of the registration week)."""
    sizes: dict[date, int] = defaultdict(int)
    for day, users in session.execute(
        select(CohortSize.day, CohortSize.users).where(
            CohortSize.tenant_id == q.tenant, q.on_days(CohortSize.day)
        )
    ):
        sizes[_monday(day)] += users
    if not sizes:
        return []
    if q.until is not None:
        last_day = q.until
    else:
        last_hour = session.execute(
            select(func.max(MetricCounter.hour)).where(
                MetricCounter.tenant_id == q.tenant, MetricCounter.metric == "events"
            )
        ).scalar_one()
        last_day = last_hour.date() if last_hour else max(sizes)
    last_week = _monday(last_day)
    retained: dict[date, list[int]] = {
        week: [0] * (max(0, (last_week - week).days // 7) + 1) for week in sizes
    }
    # Summed by cohort week in SQL: a year holds ~365 x 26 day rows, ~52 x 26 week rows.
    cohort_week = week_of(session, CohortWeek.cohort_day)
    for week, active_week, users in session.execute(
        select(cohort_week, CohortWeek.active_week, func.sum(CohortWeek.users))
        .where(CohortWeek.tenant_id == q.tenant, q.on_days(CohortWeek.cohort_day))
        .group_by(cohort_week, CohortWeek.active_week)
    ):
        counts = retained[_as_date(week)]
        n = (_as_date(active_week) - _as_date(week)).days // 7
        if n < len(counts):
            counts[n] += int(users)
    return [
        {"cohort_week": week.isoformat(), "size": sizes[week], "retained": retained[week]}
        for week in sorted(sizes)
    ]


# ------------------------------------------------------------------ conversion


def _conversion_cells(
    orders: Iterable[tuple[datetime | None, datetime | None]], now: datetime | None
) -> dict[date, list[int]]:
    """Orders, paid and abandoned orders by day created; ``now=None``: every window has passed."""
    cells: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for created, paid in orders:
        assert created is not None  # filtered by the callers
        cell = cells[created.date()]
        cell[0] += 1
        cell[1] += paid is not None
        deadline = created + ABANDONMENT_WINDOW
        cell[2] += (now is None or deadline <= now) and (paid is None or paid > deadline)
    return cells


def _orders(tenant: str, *where: Any) -> Any:
    return select(Order.created_at, Order.paid_at).where(
        Order.tenant_id == tenant, Order.created_at.is_not(None), *where
    )


def conversion(session: Session, tenant: str, dirty: Iterable[date]) -> int:
    """Recompute the conversion rows of the orders created on the ``dirty`` days."""
    spans = runs(dirty)
    if not spans:
        return 0
    cells = _conversion_cells(session.execute(_orders(tenant, _at(Order.created_at, spans))), None)
    rows = [
        {"tenant_id": tenant, "day": day, "orders": o, "paid_orders": p, "abandoned": a}
        for day, (o, p, a) in sorted(cells.items())
    ]
    window = and_(DailyConversion.tenant_id == tenant, _on(DailyConversion.day, spans))
    return _replace(session, DailyConversion, window, ("tenant_id", "day"), rows)


def conversion_report(session: Session, q: Query) -> list[Row]:
    """Rows of the conversion report: the rollup for days whose abandonment windows have all
    passed (two days after the day began), the orders themselves for the days after."""
    settled = q.now.date() - timedelta(days=2)
    cells = {
        day: [orders, paid, abandoned]
        for day, orders, paid, abandoned in session.execute(
            select(
                DailyConversion.day,
                DailyConversion.orders,
                DailyConversion.paid_orders,
                DailyConversion.abandoned,
            ).where(
                DailyConversion.tenant_id == q.tenant,
                q.on_days(DailyConversion.day),
                DailyConversion.day <= settled,
            )
        )
    }
    recent = Order.created_at >= _midnight(settled + timedelta(days=1))
    cells.update(
        _conversion_cells(
            session.execute(_orders(q.tenant, q.between(Order.created_at), recent)), q.now
        )
    )
    return [
        {
            "date": day.isoformat(),
            "orders": orders,
            "paid_orders": paid,
            "conversion_rate": rate(paid, orders),
            "abandoned": abandoned,
        }
        for day, (orders, paid, abandoned) in sorted(cells.items())
    ]


# ---------------------------------------------------------------------- logins


def logins(session: Session, tenant: str, dirty: Iterable[date]) -> int:
    """Recompute the logins and distinct users of the ``dirty`` days."""
    spans = runs(dirty)
    if not spans:
        return 0
    # Logins from ``city_logins`` (a row a day and place), users from ``login_locations``.
    counted = {
        day: n
        for day, n in session.execute(
            select(CityLogin.day, func.sum(CityLogin.logins))
            .where(CityLogin.tenant_id == tenant, _on(CityLogin.day, spans))
            .group_by(CityLogin.day)
        )
    }
    rows = [
        {
            "tenant_id": tenant,
            "day": _as_date(day),
            "logins": int(counted.get(day, 0)),
            "users": int(users),
        }
        for day, users in session.execute(
            select(LoginLocation.day, login_users())
            .where(LoginLocation.tenant_id == tenant, _on(LoginLocation.day, spans))
            .group_by(LoginLocation.day)
        )
    ]
    window = and_(DailyLogins.tenant_id == tenant, _on(DailyLogins.day, spans))
    return _replace(session, DailyLogins, window, ("tenant_id", "day"), rows)


def logins_report(session: Session, q: Query) -> list[Row]:
    """Rows of the logins report."""
    return [
        {
            "date": day.isoformat(),
            "logins": int(count),
            "users": users,
            "logins_per_user": rate(int(count), users),
        }
        for day, count, users in session.execute(
            select(DailyLogins.day, DailyLogins.logins, DailyLogins.users)
            .where(DailyLogins.tenant_id == q.tenant, q.on_days(DailyLogins.day))
            .order_by(DailyLogins.day)
        )
    ]


# ----------------------------------------------------------------- spans of days


def _extend_spans(
    session: Session, model: Any, key: Sequence[str], source: Select[*tuple[Any, ...]]
) -> int:
    """Upsert ``source``'s spans (key columns, ``first_day``, ``last_day``) into ``model``.

    A stored span only grows: the new first day replaces an earlier-starting one's only
    if it is earlier, the last day likewise. A row the new span does not extend is left
    as it is (no new row version), which is most of them. ``source`` comes in key
    order: new rows fill the primary key's pages in turn (a rebuild's index ~22% smaller
    than in the order a hash aggregate gives), and two refreshes lock rows alike.
    """
    stmt = insert_for(session)(model).from_select([*key, "first_day", "last_day"], source)
    old, new = model.__table__.c, stmt.excluded
    earlier, later = new.first_day < old.first_day, new.last_day > old.last_day
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={
            "first_day": case((earlier, new.first_day), else_=old.first_day),
            "last_day": case((later, new.last_day), else_=old.last_day),
        },
        where=or_(earlier, later),
    )
    result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
    return int(result.rowcount or 0)


def user_spans(session: Session, tenant: str, dirty: Iterable[date] | None) -> int:
    """Bring ``user_hours`` and ``city_users`` in line with the ``dirty`` days; the rows changed.

    A span is a user's first and last day active in an hour of the day (``user_hours``,
    from ``user_activity``) or logged in from a place (``city_users``, from
    ``login_locations``, users with an id). Each dirty day can only extend spans (stored
    rows are never removed but by a rebuild), so its users' spans are extended from its
    rows. ``dirty=None`` recomputes the tenant's spans from all history, dropping the
    stored ones first: a rebuild, after which a span may also have shrunk.
    """
    activity_day = func.date(UserActivity.hour)
    in_activity: ColumnElement[bool] = UserActivity.tenant_id == tenant
    in_logins = and_(LoginLocation.tenant_id == tenant, LoginLocation.user_id != "")
    if dirty is None:
        session.execute(delete(UserHour).where(UserHour.tenant_id == tenant))
        session.execute(delete(CityUser).where(CityUser.tenant_id == tenant))
    else:
        spans = runs(dirty)
        if not spans:
            return 0
        in_activity = and_(in_activity, _at(UserActivity.hour, spans))
        in_logins = and_(in_logins, _on(LoginLocation.day, spans))
    hour = hour_of_day(session, UserActivity.hour)
    place = (LoginLocation.tenant_id, LoginLocation.country, LoginLocation.city)
    return _extend_spans(
        session,
        UserHour,
        ("tenant_id", "hour_of_day", "user_id"),
        select(
            UserActivity.tenant_id,
            hour,
            UserActivity.user_id,
            func.min(activity_day),
            func.max(activity_day),
        )
        .where(in_activity)
        .group_by(UserActivity.tenant_id, hour, UserActivity.user_id)
        .order_by(UserActivity.tenant_id, hour, UserActivity.user_id),
    ) + _extend_spans(
        session,
        CityUser,
        ("tenant_id", "country", "city", "user_id"),
        select(
            *place,
            LoginLocation.user_id,
            func.min(LoginLocation.day),
            func.max(LoginLocation.day),
        )
        .where(in_logins)
        .group_by(*place, LoginLocation.user_id)
        .order_by(*place, LoginLocation.user_id),
    )


# ----------------------------------------------------------------------- hooks


#: The days these rollups compute: their week arithmetic must stay inside the calendar.
#: Events are refused outside the configured event-time window long before these.
_EARLIEST = date.min + timedelta(days=7)
_LATEST = date.max - timedelta(days=14)


def refresh(session: Session, tenant: str, dirty: Iterable[date]) -> int:
    """Recompute every rollup of this module that the ``dirty`` days of ``tenant`` affect."""
    changed = sorted(d for d in set(dirty) if _EARLIEST <= d <= _LATEST)
    return (
        retention(session, tenant, changed)
        + conversion(session, tenant, changed)
        + logins(session, tenant, changed)
        + user_spans(session, tenant, changed)
    )


@dataclass
class Watched:
    """The ``(tenant, id)`` keys of a batch's changes that move rows of these rollups."""

    created: set[tuple[str, str]] = field(default_factory=set)  # orders given a created_at
    paid: set[tuple[str, str]] = field(default_factory=set)  # orders given a paid_at
    registered: set[tuple[str, str]] = field(default_factory=set)  # users given a registered_at


def watched(changes: Iterable[Change]) -> Watched:
    """The keys :func:`days_before` and :func:`days_after` look up (one pass over the changes)."""
    keys = Watched()
    for c in changes:
        if not isinstance(c, Upsert):
            continue
        values = c.values
        if c.aggregate is ORDERS:
            key = (values["tenant_id"], values["order_id"])
            if values.get("created_at") is not None:
                keys.created.add(key)
            if values.get("paid_at") is not None:
                keys.paid.add(key)
        elif c.aggregate is COHORTS:
            keys.registered.add((values["tenant_id"], values["user_id"]))
    return keys


@dataclass(frozen=True)
class _StoredTime:
    """A time a table stores per ``(tenant_id, <id_column>)`` key, whose day is looked up."""

    model: Any
    id_column: str
    at: str

    def sql(self) -> str:
        """PostgreSQL: its keys' days, the keys given as two arrays (tenants, ids)."""
        columns = ("tenant_id", f"{self.at}::date AS day")
        return keyed_rows_sql(self.model.__tablename__, self.id_column, columns, self.at)


_ORDER_CREATED = _StoredTime(Order, "order_id", "created_at")
_USER_REGISTERED = _StoredTime(UserCohort, "user_id", "registered_at")


def _stored_days(
    session: Session,
    wanted: Sequence[tuple[_StoredTime, set[tuple[str, str]]]],
    writes: Writes | None = None,
) -> set[tuple[str, date]]:
    """The days of the times stored for each ``(tenant, id)`` key, in its table.

    A writer asks this for every batch, so it is one round trip on PostgreSQL for every
    table and tenant: the keys go as arrays joined with ``unnest`` (one index probe a
    key), in a text built once per process and sent as it is, with no SQLAlchemy
    compilation (an ORM select per tenant and table took ~11% of a worker's CPU samples
    at everyday batch sizes, in a profile). No keys, no statement. SQLite: a row-value ``IN``
    per table. With ``writes``, what it holds goes first, in the same round trip.
    """
    asked = [(stored, sorted(keys)) for stored, keys in wanted if keys]
    if not asked:
        return set()
    if dialect_of(session) != "postgresql":
        found: set[tuple[str, date]] = set()
        for stored, keys in asked:
            model = stored.model
            when = getattr(model, stored.at)
            pair = tuple_(model.tenant_id, getattr(model, stored.id_column))
            for tenant, stored_at in session.execute(
                select(model.tenant_id, when).where(pair.in_(keys), when.is_not(None))
            ):
                found.add((tenant, stored_at.date()))
        return found
    tables = tuple(stored for stored, _ in asked)
    sql = statement(
        session,
        ("stored-days", tables),
        lambda _: " UNION ALL ".join(stored.sql() for stored in tables),
    )
    params: list[list[str]] = []
    for _, keys in asked:
        params += [[tenant for tenant, _ in keys], [ident for _, ident in keys]]
    if writes is not None:
        result = writes.send((sql, params))
    else:
        result = driver_rows(session.connection(), sql, tuple(params))
    return {(tenant, day) for tenant, day in result}


def days_before(session: Session, keys: Watched) -> set[tuple[str, date]]:
    """Before the changes are written: the days the orders they create and the users they
    register are stored on now (an earlier time moves them away from those days)."""
    return _stored_days(
        session, [(_ORDER_CREATED, keys.created), (_USER_REGISTERED, keys.registered)]
    )


def days_after(
    session: Session, keys: Watched, writes: Writes | None = None
) -> set[tuple[str, date]]:
    """After the changes are written: the days the orders they paid were created on.

    Read after writing, so an ``order.created`` another worker committed meanwhile is
    seen (the upsert waited for its row). Changes held in ``writes`` are sent first, in
    the read's round trip.
    """
    return _stored_days(session, [(_ORDER_CREATED, keys.paid)], writes)
