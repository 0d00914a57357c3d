"""Reports on small datasets written out here, with every expected number computed by hand.

Runs on PostgreSQL and on SQLite (the ``engine`` fixture).
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics import rollups
from analytics.errors import DuplicateRegistration
from analytics.models import ActiveUsersDaily, Alert, Base
from analytics.reports import REPORTS, Query, Report, ReportError, register, run
from tests.analytics.helpers import apply, make


def report(engine, name, tenant="tenant-a", **options):
    with Session(engine) as session, session.begin():
        return run(session, name, Query(tenant, **options))


def seen(user, day, hour=12, tenant="tenant-a", event_id=None, event_type="user.logged_in"):
    return make(
        event_type,
        {},
        timestamp=f"{day}T{hour:02d}:00:00Z",
        user_id=user,
        tenant_id=tenant,
        event_id=event_id or f"{tenant}-{user}-{day}-{hour}-{event_type}",
    )


# Activity written out: who was active on which day of March 2024.
ACTIVITY = {
    "2024-03-01": ["ann", "bob"],
    "2024-03-02": ["ann"],
    "2024-03-05": ["cid"],
    "2024-03-08": ["bob", "dan"],
    "2024-03-31": ["eve"],
}


def load_activity(engine):
    apply(engine, [seen(user, day) for day, users in ACTIVITY.items() for user in users])


def test_dau_counts_distinct_users_per_day(engine):
    load_activity(engine)
    apply(engine, [seen("ann", "2024-03-01", hour=18)])  # twice the same day: once
    assert report(engine, "dau") == [
        {"date": "2024-03-01", "active_users": 2},
        {"date": "2024-03-02", "active_users": 1},
        {"date": "2024-03-05", "active_users": 1},
        {"date": "2024-03-08", "active_users": 2},
        {"date": "2024-03-31", "active_users": 1},
    ]


def test_wau_counts_the_seven_days_ending_on_each_day(engine):
    load_activity(engine)
    rows = {r["date"]: r["active_users"] for r in report(engine, "wau")}
    # 03-01: ann bob | 03-02..03-05: + cid on 05 -> ann bob cid | 03-07: window 01..07
    assert rows["2024-03-01"] == 2
    assert rows["2024-03-05"] == 3
    assert rows["2024-03-07"] == 3  # ann, bob (03-01) still inside 01..07
    assert rows["2024-03-08"] == 4  # 02..08: ann (02), cid (05), bob, dan (08)
    assert rows["2024-03-09"] == 3  # 03..09: cid, bob, dan
    assert rows["2024-03-14"] == 2  # 08..14: bob, dan
    assert "2024-03-15" not in rows and "2024-03-30" not in rows  # nobody in those weeks
    assert rows["2024-03-31"] == 1


def test_mau_counts_thirty_days_including_days_before_since(engine):
    load_activity(engine)
    rows = report(engine, "mau", since=date(2024, 3, 29), until=date(2024, 4, 2))
    # 03-29: 02-29..03-29 = ann bob cid dan; 03-30: 03-01..03-30 = same four;
    # 03-31: 03-02..03-31 = ann cid bob dan eve; 04-01: 03-03.. = cid bob dan eve;
    # 04-02: 03-04.. = cid bob dan eve.
    assert rows == [
        {"date": "2024-03-29", "active_users": 4},
        {"date": "2024-03-30", "active_users": 4},
        {"date": "2024-03-31", "active_users": 5},
        {"date": "2024-04-01", "active_users": 4},
        {"date": "2024-04-02", "active_users": 4},
    ]


def test_late_events_reach_the_rollups_without_a_manual_refresh(engine):
    load_activity(engine)
    assert report(engine, "dau", since=date(2024, 3, 2), until=date(2024, 3, 2)) == [
        {"date": "2024-03-02", "active_users": 1}
    ]
    apply(engine, [seen("zed", "2024-03-02")])
    assert report(engine, "dau", since=date(2024, 3, 2), until=date(2024, 3, 2)) == [
        {"date": "2024-03-02", "active_users": 2}
    ]
    assert report(engine, "mau", since=date(2024, 3, 31), until=date(2024, 3, 31)) == [
        {"date": "2024-03-31", "active_users": 6}
    ]


def rollup_rows(engine):
    with Session(engine) as session:
        return session.execute(
            select(ActiveUsersDaily.tenant_id, ActiveUsersDaily.day, ActiveUsersDaily.dau,
                   ActiveUsersDaily.wau, ActiveUsersDaily.mau).order_by(ActiveUsersDaily.day)
        ).all()  # fmt: skip


def test_rollups_run_twice_or_over_covered_days_leave_identical_rows(engine):
    load_activity(engine)
    with Session(engine) as session, session.begin():
        rollups.refresh_dirty(session)
    first = rollup_rows(engine)
    assert first
    for _ in range(2):
        with Session(engine) as session, session.begin():
            rollups.recompute(session, date(2024, 2, 20), date(2024, 4, 30))
            rollups.refresh_dirty(session)
        assert rollup_rows(engine) == first


def test_a_recompute_removes_rollup_rows_that_became_empty(engine):
    load_activity(engine)
    with Session(engine) as session, session.begin():
        rollups.refresh_dirty(session)
        session.add(
            ActiveUsersDaily(tenant_id="tenant-a", day=date(2024, 6, 1), dau=9, wau=9, mau=9)
        )
    with Session(engine) as session, session.begin():
        rollups.recompute(session, date(2024, 6, 1), date(2024, 6, 1), tenant="tenant-a")
    assert date(2024, 6, 1) not in [row.day for row in rollup_rows(engine)]


def test_retention_counts_each_cohort_week_by_week(engine):
    registrations = [
        # cohort of Monday 2024-03-04: ann (Tue), bob (Sun)
        make("user.registered", {"user_id": "ann"}, "2024-03-05T09:00:00Z", "r1", user_id="ann"),
        make("user.registered", {"user_id": "bob"}, "2024-03-10T09:00:00Z", "r2", user_id="bob"),
        # cohort of 2024-03-11: cid, registered by an admin (envelope user is someone else)
        make("user.registered", {"user_id": "cid"}, "2024-03-12T09:00:00Z", "r3", user_id="admin"),
    ]
    activity = [
        seen("ann", "2024-03-13"),  # ann: week 1
        seen("ann", "2024-03-27"),  # ann: week 3 (none in week 2)
        seen("cid", "2024-03-25"),  # cid: week 2 of its cohort
    ]
    apply(engine, registrations + activity)
    assert report(engine, "retention") == [
        # week 0: ann and bob were active (their registrations); weeks 1..3
        {"cohort_week": "2024-03-04", "size": 2, "retained": [2, 1, 0, 1]},
        # cid's registration was the admin's activity: week 0 has nobody
        {"cohort_week": "2024-03-11", "size": 1, "retained": [0, 0, 1]},
    ]
    assert report(engine, "retention", since=date(2024, 3, 11), until=date(2024, 3, 25)) == [
        {"cohort_week": "2024-03-11", "size": 1, "retained": [0, 0, 1]},
    ]


def test_revenue_by_day_books_refunds_on_their_day_in_their_orders_currency(engine):
    apply(
        engine,
        [
            make("order.created", {"order_id": "o1", "total_amount": 100, "currency": "eur"}, "2024-03-01T10:00:00Z", "e1"),
            make("order.created", {"order_id": "o2", "total_amount": 50.5}, "2024-03-01T11:00:00Z", "e2"),
            make("payment.processed", {"payment_id": "p9", "amount": 20, "currency": "GBP"}, "2024-03-01T12:00:00Z", "e3"),
            # refund of o1 two days later: EUR; of p9 (no order known): GBP; of nothing known: USD
            make("payment.refunded", {"order_id": "o1", "refund_amount": 30}, "2024-03-03T10:00:00Z", "e4"),
            make("payment.refunded", {"payment_id": "p9", "refund_amount": 5}, "2024-03-03T11:00:00Z", "e5"),
            make("payment.refunded", {"order_id": "zz", "refund_amount": 1.25}, "2024-03-03T12:00:00Z", "e6"),
            # a cancellation's refund_amount is not a refund
            make("order.cancelled", {"order_id": "o2", "refund_amount": 50.5}, "2024-03-03T13:00:00Z", "e7"),
        ],
    )  # fmt: skip
    assert report(engine, "revenue-by-day") == [
        {"date": "2024-03-03", "currency": "EUR", "revenue": 0.0, "orders": 0, "refunds": 30.0, "net_revenue": -30.0},
        {"date": "2024-03-03", "currency": "GBP", "revenue": 0.0, "orders": 0, "refunds": 5.0, "net_revenue": -5.0},
        {"date": "2024-03-03", "currency": "USD", "revenue": 0.0, "orders": 0, "refunds": 1.25, "net_revenue": -1.25},
        {"date": "2024-03-01", "currency": "EUR", "revenue": 100.0, "orders": 1, "refunds": 0.0, "net_revenue": 100.0},
        {"date": "2024-03-01", "currency": "USD", "revenue": 50.5, "orders": 1, "refunds": 0.0, "net_revenue": 50.5},
    ]  # fmt: skip
    assert report(engine, "aov", until=date(2024, 3, 1)) == [
        {"date": "2024-03-01", "currency": "EUR", "orders": 1, "aov": 100.0},
        {"date": "2024-03-01", "currency": "USD", "orders": 1, "aov": 50.5},
    ]


def test_conversion_and_abandonment_use_a_24_hour_window(engine):
    apply(
        engine,
        [
            make("order.created", {"order_id": "paid-fast", "total_amount": 1}, "2024-03-01T10:00:00Z", "a"),
            make("payment.processed", {"order_id": "paid-fast"}, "2024-03-01T10:05:00Z", "b"),
            make("order.created", {"order_id": "paid-late", "total_amount": 1}, "2024-03-01T11:00:00Z", "c"),
            make("payment.processed", {"order_id": "paid-late"}, "2024-03-02T12:00:00Z", "d"),
            make("order.created", {"order_id": "never", "total_amount": 1}, "2024-03-01T12:00:00Z", "e"),
            # paid before the order event arrived (out of order): still paid
            make("payment.processed", {"order_id": "early"}, "2024-03-02T08:00:00Z", "f"),
            make("order.created", {"order_id": "early", "total_amount": 1}, "2024-03-02T09:00:00Z", "g"),
            make("order.created", {"order_id": "recent", "total_amount": 1}, "2024-03-02T23:00:00Z", "h"),
        ],
    )  # fmt: skip
    rows = report(engine, "conversion", now=datetime(2024, 3, 3, 12, 0))
    assert rows == [
        {"date": "2024-03-01", "orders": 3, "paid_orders": 2, "conversion_rate": 0.6667, "abandoned": 2},
        # "recent" has had only 13 h: not abandoned yet
        {"date": "2024-03-02", "orders": 2, "paid_orders": 1, "conversion_rate": 0.5, "abandoned": 0},
    ]  # fmt: skip


def test_sessions_report_mean_and_interpolated_percentiles(engine):
    durations = [10, 20, 30, 40, 1000]
    apply(
        engine,
        [
            make(
                "user.logged_out",
                {"session_duration_seconds": s},
                f"2024-03-01T0{i}:00:00Z",
                f"s{i}",
            )
            for i, s in enumerate(durations)
        ]
        + [make("user.logged_out", {}, "2024-03-01T09:00:00Z", "no-duration")],
    )
    # mean 220; p50 = 30; p90 at rank 3.6 = 40 + 0.6 * 960 = 616
    assert report(engine, "sessions") == [
        {"date": "2024-03-01", "sessions": 5, "avg_duration_seconds": 220.0, "p50_seconds": 30.0, "p90_seconds": 616.0}
    ]  # fmt: skip


def test_inventory_reports_levels_cycles_and_turnover(engine):
    def stock(kind, ts, event_id, **data):
        return make(
            f"inventory.{kind}", {"product_id": "p", "location_id": "l", **data}, ts, event_id
        )

    apply(
        engine,
        [
            stock("restocked", "2024-03-01T00:00:00Z", "i1", sku="SKU", new_quantity=10),
            make("order.created", {"order_id": "o", "total_amount": 9, "location_id": "l",
                                   "items": [{"product_id": "p", "quantity": 6}]}, "2024-03-01T05:00:00Z", "o1"),
            stock("low_stock", "2024-03-01T06:00:00Z", "i2", current_quantity=4),
            stock("out_of_stock", "2024-03-01T08:00:00Z", "i3"),
            stock("out_of_stock", "2024-03-01T09:00:00Z", "i4"),  # the cycle is already open
            stock("restocked", "2024-03-01T14:00:00Z", "i5", new_quantity=20),  # closes: 6 h
            stock("adjusted", "2024-03-02T00:00:00Z", "i6", previous_quantity=20, new_quantity=18),
        ],
    )  # fmt: skip
    # levels 10, 4, 0, 0, 20, 18: mean 52/6; turnover 6 / (52/6) = 0.6923
    assert report(engine, "inventory") == [
        {"product_id": "p", "sku": "SKU", "location_id": "l", "on_hand": 18, "low_stock_events": 1,
         "out_of_stock_events": 2, "avg_restock_hours": 6.0, "turnover": 0.6923}
    ]  # fmt: skip
    # as of the end of 03-01 the level was 20
    assert report(engine, "inventory", until=date(2024, 3, 1))[0]["on_hand"] == 20
    assert report(engine, "dead-stock", days=30, now=datetime(2024, 3, 20)) == []
    assert report(engine, "dead-stock", days=10, now=datetime(2024, 3, 20)) == [
        {"product_id": "p", "sku": "SKU", "location_id": "l", "on_hand": 18, "last_sold_at": "2024-03-01T05:00:00Z"}
    ]  # fmt: skip


def test_payment_failure_rate_alerts_once_per_open_condition(engine):
    def payment(kind, n, hour):
        return make(
            f"payment.{kind}",
            {"payment_id": f"{kind}{n}"},
            f"2024-03-01T{hour:02d}:{n:02d}:00Z",
            f"{kind}-{hour}-{n}",
        )

    bad_hour = [payment("failed", n, 10) for n in range(8)] + [
        payment("processed", n, 10) for n in range(12)
    ]
    worse_hour = [payment("failed", n, 11) for n in range(20)]
    good_hour = [payment("processed", n, 12) for n in range(25)]
    apply(engine, bad_hour)
    apply(engine, worse_hour)  # still open: no second alert
    apply(engine, good_hour)
    alerts = report(engine, "alerts")
    assert [(a["created_at"], a["alert_type"], a["severity"]) for a in alerts] == [
        ("2024-03-01T10:00:00Z", "payment_failure_rate", "critical")
    ]
    assert alerts[0]["message"].startswith(
        "Payment failure rate 40% in the hour from 2024-03-01 10:00 UTC"
    )
    assert report(engine, "payments") == [
        {"date": "2024-03-01", "processed": 37, "failed": 28, "refunded": 0, "failure_rate": 0.4308}
    ]
    assert report(engine, "failure-reasons") == [{"failure_reason": "unknown", "count": 28}]


def test_two_concurrent_payment_alert_recomputations_leave_one_set_of_alerts(pg):
    # Beat's refresh and a report's refresh can recompute one tenant's alerts at
    # the same moment. The second must wait for the first and find nothing to do,
    # not delete what it cannot see yet and insert the same alerts again.
    import threading

    failed = [
        make("payment.failed", {"payment_id": f"f{n}"}, f"2024-03-01T10:{n:02d}:00Z", f"f{n}")
        for n in range(20)
    ]
    processed = [
        make("payment.processed", {"payment_id": f"p{n}"}, f"2024-03-01T11:{n:02d}:00Z", f"p{n}")
        for n in range(20)
    ]
    apply(pg, failed + processed)  # an alert opened at 10:00 and resolved at 11:00
    first = Session(pg)
    first.begin()
    assert rollups.payment_alerts(first, "tenant-a") == 1
    done = threading.Event()

    def second() -> None:
        with Session(pg) as session, session.begin():
            rollups.payment_alerts(session, "tenant-a")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    waited = not done.wait(1.0)  # the second waits while the first is uncommitted
    first.commit()
    first.close()
    thread.join(10)
    with Session(pg) as session:  # not the report: it would recompute them first
        stored = session.execute(select(Alert.alert_key, Alert.resolved_at)).all()
    assert stored == [("payment_failure_rate@2024-03-01T10", datetime(2024, 3, 1, 11))]
    assert waited


def test_no_report_of_one_tenant_shows_anything_of_another(engine):
    from loadgen import Simulator
    from tests.analytics.helpers import to_event

    simulator = Simulator(tenants=2, seed=5, start=datetime(2024, 3, 4), days=5)
    documents = list(simulator.events(1500))
    only_a = [d for d in documents if d["tenant_id"] == "tenant-1"]
    apply(engine, [to_event(d) for d in only_a])
    alone = {
        name: report(engine, name, tenant="tenant-1", now=datetime(2024, 4, 1)) for name in REPORTS
    }
    assert sum(len(rows) for rows in alone.values()) > 100
    apply(engine, [to_event(d) for d in documents if d["tenant_id"] != "tenant-1"])
    for name in REPORTS:
        assert report(engine, name, tenant="tenant-1", now=datetime(2024, 4, 1)) == alone[name], (
            name
        )


def test_a_report_needs_a_tenant_and_an_ordered_range(engine):
    with pytest.raises(ReportError, match="needs a tenant"):
        Query("")
    with pytest.raises(ReportError, match="--since 2024-03-02 is after --until 2024-03-01"):
        Query("t", since=date(2024, 3, 2), until=date(2024, 3, 1))
    with Session(engine) as session, pytest.raises(ReportError, match="unknown report 'nope'"):
        run(session, "nope", Query("t"))


def test_a_report_name_registered_twice_is_refused():
    aov = REPORTS["aov"]
    with pytest.raises(DuplicateRegistration, match="report named 'aov' is already registered"):
        register(Report("aov", aov.columns, aov.compute, "a second aov"))
    assert REPORTS["aov"] is aov


def test_every_report_answers_an_empty_database_with_no_rows(engine):
    for name in REPORTS:
        assert report(engine, name) == [], name
    assert Base.metadata.tables  # the engine was migrated, not empty by accident


def test_rollups_and_reports_work_at_both_ends_of_the_accepted_time_window(engine):
    apply(engine, [seen("ann", "2000-01-01", hour=0), seen("bob", "2099-12-31", hour=23)])
    assert report(engine, "dau") == [
        {"date": "2000-01-01", "active_users": 1},
        {"date": "2099-12-31", "active_users": 1},
    ]
    mau = report(engine, "mau", since=date(2100, 1, 29), until=date(2100, 1, 29))
    assert mau == [{"date": "2100-01-29", "active_users": 1}]


def test_a_refresh_over_days_at_the_ends_of_the_calendar_does_not_stop_other_tenants(engine):
    from analytics.models import RollupDirtyDay, UserActivity

    # Rows an older version could store (events dated year 1 and year 9999): the
    # window arithmetic must not overflow, and every tenant's refresh goes on.
    apply(engine, [seen("ann", "2024-03-01", tenant="tenant-b")])
    with Session(engine) as session, session.begin():
        for day, hour in (
            (date(1, 1, 1), datetime(1, 1, 1)),
            (date.max, datetime(9999, 12, 31, 23)),
        ):
            session.add(UserActivity(tenant_id="tenant-a", hour=hour, user_id="u"))
            session.add(RollupDirtyDay(tenant_id="tenant-a", day=day, generation=1))
    with Session(engine) as session, session.begin():
        rollups.refresh_dirty(session)
        assert session.execute(select(RollupDirtyDay)).all() == []
    assert report(engine, "dau", tenant="tenant-b") == [{"date": "2024-03-01", "active_users": 1}]


def test_times_print_as_utc_to_the_second_whether_naive_or_aware():
    from datetime import UTC

    from analytics.reports.query import iso_time

    naive = datetime(2024, 3, 5, 7, 8, 9, 999_999)
    assert iso_time(naive) == "2024-03-05T07:08:09Z"
    assert iso_time(naive.replace(tzinfo=UTC)) == "2024-03-05T07:08:09Z"
    assert iso_time(datetime(2024, 3, 5)) == "2024-03-05T00:00:00Z"
    assert iso_time(None) is None
