"""User reports: activity-heatmap, dau/wau/mau, retention, sessions, geo and logins."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, distinct, func, select
from sqlalchemy.orm import Session

from analytics.models import LoginLocation, MetricCounter, UserActivity, UserCohort
from analytics.reports.query import (
    Query,
    Row,
    counters,
    daily_percentiles,
    day_of,
    hour_of_day,
    iso_day,
    money,
    rate,
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
