"""The reach rollups: users' spans of days per hour of day (``user_hours``) and per place
(``city_users``), logins per day and place (``city_logins``) and every event of an hour
(the ``events`` counter). The writer keeps the counters; the spans are extended when the
days that received events are refreshed. Exact under late and repeated events, and after a
rebuild."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session

from analytics import rollups
from analytics.ingest import ALL_EVENTS, Context
from analytics.models import CityLogin, CityUser, MetricCounter, UserHour
from analytics.rebuild import rebuild
from analytics.reports import Query, run
from tests.analytics.helpers import apply, make


def login(stamp: str, event_id: str, user: str | None = "user-1", city: str = "Paris") -> Any:
    location = {"country": "FR", "city": city}
    return make("user.logged_in", {"location": location}, stamp, event_id, user_id=user)


def refresh(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        rollups.refresh_dirty(session)


def rows(engine: Engine, model: Any) -> list[tuple[Any, ...]]:
    """``model``'s rows, after the days that received events were refreshed."""
    refresh(engine)
    # The key first, then the rest (user_hours stores its days first).
    table = model.__table__
    columns = [*table.primary_key.columns, *(c for c in table.columns if not c.primary_key)]
    with Session(engine) as session:
        return [tuple(r) for r in session.execute(select(*columns).order_by(*columns))]


def all_events(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as session:
        return [
            tuple(r)
            for r in session.execute(
                select(MetricCounter.tenant_id, MetricCounter.hour, MetricCounter.count)
                .where(MetricCounter.metric == ALL_EVENTS)
                .order_by(MetricCounter.tenant_id, MetricCounter.hour)
            )
        ]


def report(engine: Engine, name: str, since: date | None = None, until: date | None = None):
    with Session(engine) as session, session.begin():
        return run(session, name, Query("tenant-a", since, until))


def test_a_late_event_of_an_earlier_day_moves_the_first_day_back(engine):
    apply(engine, [login("2024-03-05T10:00:00Z", "a")])
    apply(engine, [login("2024-03-03T10:30:00Z", "late")])
    assert rows(engine, UserHour) == [
        ("tenant-a", 10, "user-1", date(2024, 3, 3), date(2024, 3, 5))
    ]
    assert rows(engine, CityUser) == [
        ("tenant-a", "FR", "Paris", "user-1", date(2024, 3, 3), date(2024, 3, 5))
    ]
    # A day inside the span changes nothing; a later one moves the last day.
    apply(engine, [login("2024-03-04T10:00:00Z", "inside"), login("2024-03-07T10:59:00Z", "b")])
    assert rows(engine, UserHour) == [
        ("tenant-a", 10, "user-1", date(2024, 3, 3), date(2024, 3, 7))
    ]
    assert rows(engine, CityUser) == [
        ("tenant-a", "FR", "Paris", "user-1", date(2024, 3, 3), date(2024, 3, 7))
    ]
    # Read with ranges open at one end: the late day counts for --until, the last for --since.
    for since, until in [(None, date(2024, 3, 3)), (date(2024, 3, 7), None), (None, None)]:
        assert report(engine, "activity-heatmap", since, until)[0]["active_users"] == 1
        assert report(engine, "geo", since, until)[0]["users"] == 1
    assert report(engine, "activity-heatmap", since=date(2024, 3, 8)) == []


def test_a_user_seen_again_in_the_same_hour_and_place_counts_once(engine):
    first = login("2024-03-05T10:00:00Z", "a")
    # The same event twice in a batch and once more later; another event of the same user,
    # hour and place; a login without a user (a login, not a user).
    apply(engine, [first, first, login("2024-03-05T10:20:00Z", "b")])
    apply(engine, [first, login("2024-03-05T10:40:00Z", "c", user=None)])
    assert len(rows(engine, UserHour)) == 1
    assert len(rows(engine, CityUser)) == 1
    assert rows(engine, CityLogin) == [("tenant-a", date(2024, 3, 5), "FR", "Paris", 3)]
    assert report(engine, "activity-heatmap") == [{"hour": 10, "active_users": 1, "events": 3}]
    assert report(engine, "geo") == [{"country": "FR", "city": "Paris", "logins": 3, "users": 1}]


def test_the_writer_leaves_the_spans_to_the_refresh_of_the_days(engine):
    """Ingest writes no span row (it would cost every event an upsert); a report brings
    them up to date before it reads them."""
    apply(engine, [login("2024-03-05T10:00:00Z", "a")])
    with Session(engine) as session:
        assert session.execute(select(UserHour)).first() is None
        assert session.execute(select(CityUser)).first() is None
    assert report(engine, "activity-heatmap") == [{"hour": 10, "active_users": 1, "events": 1}]
    assert report(engine, "geo") == [{"country": "FR", "city": "Paris", "logins": 1, "users": 1}]
    # A later event is in the next report without anyone running a rollup.
    apply(engine, [login("2024-03-06T11:00:00Z", "b", user="user-2", city="Lyon")])
    assert report(engine, "activity-heatmap", until=date(2024, 3, 9)) == [
        {"hour": 10, "active_users": 1, "events": 1},
        {"hour": 11, "active_users": 1, "events": 1},
    ]
    assert [r["users"] for r in report(engine, "geo", since=date(2024, 3, 6))] == [1]


def test_a_day_inside_a_span_rewrites_no_row(pg):
    """The refresh's condition: a repeated day leaves the row as it is (no new row version)."""
    apply(pg, [login("2024-03-03T10:00:00Z", "a"), login("2024-03-06T10:00:00Z", "b")])
    refresh(pg)

    def versions() -> list[str]:
        with pg.connect() as conn:
            return [
                conn.execute(text(f"SELECT xmin::text FROM {name}")).scalar_one()
                for name in ("user_hours", "city_users")
            ]

    before = versions()
    apply(pg, [login("2024-03-04T10:00:00Z", "c"), login("2024-03-06T10:30:00Z", "d")])
    refresh(pg)
    assert versions() == before
    apply(pg, [login("2024-03-07T10:00:00Z", "e")])
    refresh(pg)
    assert all(a != b for a, b in zip(versions(), before, strict=True))


def test_a_rebuild_leaves_the_reach_rollups_as_ingest_made_them(engine):
    events = [
        login(f"2024-03-0{day}T{hour:02d}:15:00Z", f"e{day}{hour}{user}", user=user, city=city)
        for day in (2, 3, 4, 5, 6)
        for hour, city in ((8, "Paris"), (13, "Lyon"), (22, "Paris"))
        for user in ("u1", "u2", None)
        if (day + hour + len(user or "")) % 3
    ]
    apply(engine, events)
    tables = (UserHour, CityUser, CityLogin)
    made = [rows(engine, model) for model in tables] + [all_events(engine)]
    assert all(made)
    with Session(engine) as session, session.begin():
        # Lost or wrong: spans that started in the range and after it, a day's logins.
        session.execute(update(UserHour).values(first_day=date(2024, 3, 5)))
        session.execute(update(CityUser).values(last_day=date(2024, 3, 9)))
        session.execute(delete(CityLogin).where(CityLogin.day == date(2024, 3, 4)))
    with Session(engine) as session, session.begin():
        rebuild(session, "tenant-a", date(2024, 3, 3), date(2024, 3, 4), Context())
    assert [rows(engine, model) for model in tables] + [all_events(engine)] == made
