"""User reports: activity-heatmap, dau/wau/mau, retention, sessions, geo and logins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from analytics.models import LoginLocation, MetricCounter, UserActivity
from analytics.reports.query import (
    Query,
    Row,
    counters,
    daily_percentiles,
    hour_of_day,
    money,
)


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


def active_users(window: str) -> Callable[[Session, Query], list[Row]]:
    def report(session: Session, q: Query) -> list[Row]:
        from analytics import rollups

        return rollups.active_users_report(session, q, window)

    report.__name__ = window
    return report


def retention(session: Session, q: Query) -> list[Row]:
    from analytics import report_rollups, rollups

    rollups.refresh_dirty(session, q.tenant)
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
    rows = [
        {"country": country, "city": city, "logins": int(logins), "users": int(users)}
        for country, city, logins, users in session.execute(
            select(
                LoginLocation.country,
                LoginLocation.city,
                func.sum(LoginLocation.logins),
                login_users(),
            )
            .where(LoginLocation.tenant_id == q.tenant, q.on_days(LoginLocation.day))
            .group_by(LoginLocation.country, LoginLocation.city)
        )
    ]
    return sorted(rows, key=lambda r: (-r["logins"], r["country"], r["city"]))


def logins(session: Session, q: Query) -> list[Row]:
    from analytics import report_rollups, rollups

    rollups.refresh_dirty(session, q.tenant)
    return report_rollups.logins_report(session, q)
