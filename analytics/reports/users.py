"""User reports: activity-heatmap, dau/wau/mau, retention, sessions, geo and logins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, func, select
from sqlalchemy.orm import Session

from analytics.ingest.changes import ALL_EVENTS
from analytics.models import (
    CityLogin,
    CityUser,
    LoginLocation,
    MetricCounter,
    UserActivity,
    UserHour,
)
from analytics.reports.query import (
    Query,
    Row,
    counters,
    daily_percentiles,
    hour_of_day,
    money,
    refreshed,
)


def activity_heatmap(session: Session, q: Query) -> list[Row]:
    """Events and distinct active users per UTC hour of the day.

    Events come from the hourly count of every event (``events``, no type). Distinct users
    do not add up across days, so they come from ``user_hours`` (a user's first and last
    day in each hour of the day) when the range is open at one end or both: a count of
    rows, whatever the history's length. With both ``--since`` and ``--until`` they are
    counted from ``user_activity`` over the range: exact, at a cost that grows with the
    range, not with all history.
    """
    hour = hour_of_day(session, MetricCounter.hour)
    counted = session.execute(counters(session, q, ALL_EVENTS, hour))
    events = {int(h): int(n) for h, n, _ in counted}
    users: dict[int, int]
    if q.since is not None and q.until is not None:
        user_hour = hour_of_day(session, UserActivity.hour)
        users = dict(
            session.execute(
                select(user_hour, func.count(distinct(UserActivity.user_id)))
                .where(UserActivity.tenant_id == q.tenant, q.between(UserActivity.hour))
                .group_by(user_hour)
            ).all()
        )
    else:
        refreshed(session, q.tenant)
        users = dict(
            session.execute(
                select(UserHour.hour_of_day, func.count())
                .where(UserHour.tenant_id == q.tenant, _spans(q, UserHour))
                .group_by(UserHour.hour_of_day)
            ).all()
        )
    return [
        {"hour": h, "active_users": int(users.get(h, 0)), "events": events[h]}
        for h in sorted(events)
        if events[h]
    ]


def _spans(q: Query, rollup: Any) -> ColumnElement[bool]:
    """Rows of a span rollup (``first_day``, ``last_day``) active in a range open at one end.

    Active on a day since ``--since`` is a last day on or after it; on a day until
    ``--until``, a first day on or before it.
    """
    conditions = []
    if q.since is not None:
        conditions.append(rollup.last_day >= q.since)
    if q.until is not None:
        conditions.append(rollup.first_day <= q.until)
    return and_(True, *conditions)


def active_users(window: str) -> Callable[[Session, Query], list[Row]]:
    def report(session: Session, q: Query) -> list[Row]:
        from analytics import rollups

        return rollups.active_users_report(session, q, window)

    report.__name__ = window
    return report


def retention(session: Session, q: Query) -> list[Row]:
    from analytics import report_rollups

    refreshed(session, q.tenant)
    return report_rollups.retention_report(session, q)


def sessions(session: Session, q: Query) -> list[Row]:
    return [
        {
            "date": d,
            "sessions": day.count,
            "avg_duration_seconds": money(day.total / day.count),
            "p50_seconds": money(day.p50),
            "p90_seconds": money(day.p90),
        }
        for d, day in sorted(daily_percentiles(session, q, "session_seconds").items())
    ]


def login_users() -> Any:
    """SQL: distinct users of the login rows (logins without a user id have user_id '')."""
    return func.count(distinct(LoginLocation.user_id)).filter(LoginLocation.user_id != "")


def geo(session: Session, q: Query) -> list[Row]:
    """Logins and distinct users (with an id) per place.

    Logins come from ``city_logins`` (a row a day and place). Users come from
    ``city_users`` (a user's first and last login day at each place) when the range
    is open at one end or both; with both ``--since`` and ``--until``, from
    ``login_locations`` over the range: exact, at a cost that grows with the range.
    """
    place = (CityLogin.country, CityLogin.city)
    logins = session.execute(
        select(*place, func.sum(CityLogin.logins))
        .where(CityLogin.tenant_id == q.tenant, q.on_days(CityLogin.day))
        .group_by(*place)
    ).all()
    users: dict[tuple[str, str], int]
    if q.since is not None and q.until is not None:
        found = session.execute(
            select(LoginLocation.country, LoginLocation.city, login_users())
            .where(LoginLocation.tenant_id == q.tenant, q.on_days(LoginLocation.day))
            .group_by(LoginLocation.country, LoginLocation.city)
        )
    else:
        refreshed(session, q.tenant)
        found = session.execute(
            select(CityUser.country, CityUser.city, func.count())
            .where(CityUser.tenant_id == q.tenant, _spans(q, CityUser))
            .group_by(CityUser.country, CityUser.city)
        )
    users = {(country, city): int(n) for country, city, n in found}
    rows = [
        {
            "country": country,
            "city": city,
            "logins": int(total),
            "users": users.get((country, city), 0),
        }
        for country, city, total in logins
    ]
    return sorted(rows, key=lambda r: (-r["logins"], r["country"], r["city"]))


def logins(session: Session, q: Query) -> list[Row]:
    from analytics import report_rollups

    refreshed(session, q.tenant)
    return report_rollups.logins_report(session, q)
