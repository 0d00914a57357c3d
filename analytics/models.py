"""SQLAlchemy models: the raw event store, dead letters and every aggregate the reports read.

Table names are plural everywhere. Every aggregate is keyed by ``tenant_id`` first,
so each report's filter is the leading column of a primary key or an index.
Timestamps are naive UTC. Amounts are :class:`Amount`: exact fixed-point numbers
stored as integers, so sums are exact on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Amounts keep four decimal places: cents exactly, and sub-cent prices without drift.
AMOUNT_SCALE = 10_000
ID = String(128)


class Amount(TypeDecorator[Decimal]):
    """A Decimal stored as a BigInteger count of 1/10,000ths, so SQL sums are exact."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * AMOUNT_SCALE).to_integral_value())

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)) / AMOUNT_SCALE


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class StoredEvent(Base):
    """Every accepted event, once per ``(tenant_id, event_id)``: replays are no-ops.

    On PostgreSQL the table is partitioned by month of ``occurred_at``
    (:mod:`analytics.retention`) and its primary key is ``(id, occurred_at)``. A unique
    index there would have to hold the partition key, and so could not catch a re-sent
    id under another time: :class:`EventKey` holds each key once, and the writer stores
    an event only after claiming its key there.
    """

    __tablename__ = "events"
    __table_args__ = (
        # Reports and rebuilds read a tenant's events by time; nothing filters raw
        # events by type (counters answer that), so no index for it: each index
        # costs every insert.
        Index(None, "tenant_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(ID)
    event_type: Mapped[str] = mapped_column(ID)
    known: Mapped[bool] = mapped_column(Boolean)
    user_id: Mapped[str | None] = mapped_column(ID)
    occurred_at: Mapped[datetime] = mapped_column(DateTime)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    #: When the worker wrote it (its transaction commits right after): ingestion lag.
    stored_at: Mapped[datetime | None] = mapped_column(DateTime)
    channel: Mapped[str] = mapped_column(String(255))
    response_time_ms: Mapped[float | None]
    event_id_derived: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp_derived: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventKey(Base):
    """Every event ever stored, once per ``(tenant_id, event_id)``: how a replay is known.

    The writer claims an event's key here before it stores the event
    (:func:`analytics.db.insert_once`): one probe of one index, where a look-up in the
    partitioned ``events`` would probe every month's. Keys outlive the raw events that
    retention prunes, as the aggregates those events were counted in do: an event
    re-sent after its month was pruned still counts once.
    """

    __tablename__ = "event_keys"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    event_id: Mapped[str] = mapped_column(ID, primary_key=True)


class RawHorizon(Base):
    """One row once raw events were pruned: those dated before ``pruned_before`` may be gone.

    Rebuilds read raw events, so they cannot start before it (:mod:`analytics.rebuild`).
    """

    __tablename__ = "raw_horizon"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pruned_before: Mapped[datetime] = mapped_column(DateTime)


class DeadLetter(Base):
    """A message that could not be ingested, kept for listing and replay.

    ``raw`` is the message's exact bytes, or only its first ``DEAD_LETTER_KEEP_BYTES``
    when it was larger (``raw_size`` > ``len(raw)``); ``raw_size`` and ``raw_sha256``
    always describe the whole message as it arrived.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (Index(None, "received_at"), Index(None, "fingerprint", unique=True))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    channel: Mapped[str] = mapped_column(String(255))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    messages: Mapped[Any] = mapped_column(JSON)
    tenant_id: Mapped[str | None] = mapped_column(ID)
    event_type: Mapped[str | None] = mapped_column(ID)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: sha256 of channel and bytes: a message is one dead letter however many times it
    #: arrives (two bridges forward it twice; Celery may redeliver the task that records it).
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    raw_size: Mapped[int | None] = mapped_column(BigInteger)
    #: Hex SHA-256 of the whole message (keyed with PII_SALT when it is set).
    raw_sha256: Mapped[str | None] = mapped_column(String(64))


class MetricCounter(Base):
    """A counter with one dimension: ``count`` events whose values sum to ``total``.

    ``hour`` is the hour the events fell in for the metrics some report reads by hour
    (:data:`analytics.ingest.changes.HOURLY_METRICS`), and the midnight of their day for
    every other metric: reports ask for whole days, so a day's row answers them exactly
    with a 24th of the rows.

    The 8-byte columns come first: PostgreSQL aligns them to 8 bytes, and after the
    text columns each one cost up to 7 bytes of padding a row.
    """

    __tablename__ = "metric_counters"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "metric", "hour", "dimension"),)

    hour: Mapped[datetime] = mapped_column(DateTime)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[Decimal] = mapped_column(Amount)
    tenant_id: Mapped[str] = mapped_column(ID)
    metric: Mapped[str] = mapped_column(String(64))
    dimension: Mapped[str] = mapped_column(String(255))


class UserActivity(Base):
    """That a user (the envelope's ``user_id``) produced events in an hour.

    How many is not kept: no report read it (the hour's events are counted in
    ``metric_counters``), and without it a row is never rewritten.
    """

    __tablename__ = "user_activity"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "hour", "user_id"),
        # Retention reads the activity of the users registered on a day by user.
        Index(None, "tenant_id", "user_id"),
    )

    # The time first: no alignment padding after the text columns (a row is 80 bytes;
    # 96 with the count after the text).
    hour: Mapped[datetime] = mapped_column(DateTime)
    tenant_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)


class UserCohort(Base):
    """A registered user and the time of registration (the earliest if registered twice)."""

    __tablename__ = "user_cohorts"
    __table_args__ = (Index(None, "tenant_id", "registered_at"),)

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime)
    registration_method: Mapped[str | None] = mapped_column(String(64))
    referral_source: Mapped[str | None] = mapped_column(String(64))


class ProductSale(Base):
    """Units and revenue of a product per day, currency and selling location.

    The 8-byte columns come first, then the day (no alignment padding after the text
    columns). The sale's sku is not kept: no report read it (the stock levels keep
    their own).
    """

    __tablename__ = "product_sales"
    # Later batches of the day update its rows: room on their page for a HOT update.
    __table_args__ = {"postgresql_with": {"fillfactor": 80}}

    units: Mapped[int] = mapped_column(BigInteger)
    revenue: Mapped[Decimal] = mapped_column(Amount)
    last_sold_at: Mapped[datetime] = mapped_column(DateTime)
    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    product_id: Mapped[str] = mapped_column(ID, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    location_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))


class ProductSaleMonth(Base):
    """The month's units and revenue of a product per currency and location, kept by the writer.

    The rows of ``product_sales`` summed by calendar month (``month`` is its first day),
    so a report over months reads one row a product-month instead of one a product-day.
    ``name`` is the one of the month's latest sale carrying a name (``name_at``).
    """

    __tablename__ = "product_sales_monthly"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    product_id: Mapped[str] = mapped_column(ID, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    location_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    name_at: Mapped[datetime | None] = mapped_column(DateTime)
    units: Mapped[int] = mapped_column(BigInteger)
    revenue: Mapped[Decimal] = mapped_column(Amount)
    last_sold_at: Mapped[datetime] = mapped_column(DateTime)


class DailyRevenue(Base):
    """A day's orders, revenue and refunds per currency, kept by the writer (revenue-by-day).

    ``refunds`` sums the refunds whose currency the writer resolved from their order
    when it stored them (``refunds.currency``); the others are looked up when read.
    """

    __tablename__ = "daily_revenue"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    orders: Mapped[int] = mapped_column(BigInteger)
    revenue: Mapped[Decimal] = mapped_column(Amount)
    refunds: Mapped[Decimal] = mapped_column(Amount)


class Order(Base):
    """An order's lifecycle: facts from ``order.created``, status last-writer-wins by event time.

    The order's customer, location and envelope's user are not kept: no report reads
    them (product sales keep the location), and each was a 37-byte id an order.
    """

    __tablename__ = "orders"
    __table_args__ = (
        Index(None, "tenant_id", "created_at"),
        # Later events of an order update its row: room on its page for a HOT update.
        {"postgresql_with": {"fillfactor": 80}},
    )

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    order_id: Mapped[str] = mapped_column(ID, primary_key=True)
    status: Mapped[str | None] = mapped_column(String(64))
    status_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    total_amount: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(String(3))
    items_count: Mapped[int | None]
    paid_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime)


class Payment(Base):
    """A payment's latest state (processed, failed, refunded) by event time.

    Read by its key alone (a refund's currency, when its order is unknown). Its order's
    id is not kept, nor indexed: nothing looks payments up by order (refunds carry their
    order's id), and it was a 37-byte id a payment and as much again in the index.
    """

    __tablename__ = "payments"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    payment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    status: Mapped[str | None] = mapped_column(String(32))
    status_at: Mapped[datetime | None] = mapped_column(DateTime)
    amount: Mapped[Decimal | None] = mapped_column(Amount)
    currency: Mapped[str | None] = mapped_column(String(3))
    payment_method: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(255))
    refunded_amount: Mapped[Decimal] = mapped_column(Amount)


class Refund(Base):
    """One ``payment.refunded``.

    ``currency`` is its order's, resolved by the writer when the order was already stored
    (an order's currency never changes once stored), and then counted in
    ``daily_revenue``; otherwise null, and resolved from its order or payment when read.
    """

    __tablename__ = "refunds"
    __table_args__ = (
        # revenue-by-day reads only the refunds still unresolved, a few late ones; nothing
        # else reads refunds by time but a rebuild's delete (a scan of one table is fine).
        Index(
            "ix_refunds_unresolved",
            "tenant_id",
            "refunded_at",
            postgresql_where=text("currency IS NULL"),
            sqlite_where=text("currency IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(ID)
    refunded_at: Mapped[datetime] = mapped_column(DateTime)
    order_id: Mapped[str | None] = mapped_column(ID)
    payment_id: Mapped[str | None] = mapped_column(ID)
    amount: Mapped[Decimal] = mapped_column(Amount)
    reason: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str | None] = mapped_column(String(3))


class InventoryLevel(Base):
    """On-hand stock of a product at a location (last-writer-wins) and its event counts."""

    __tablename__ = "inventory_levels"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    product_id: Mapped[str] = mapped_column(ID, primary_key=True)
    location_id: Mapped[str] = mapped_column(ID, primary_key=True)
    sku: Mapped[str | None] = mapped_column(ID)
    on_hand: Mapped[int | None] = mapped_column(BigInteger)
    level_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_sold_at: Mapped[datetime | None] = mapped_column(DateTime)
    low_stock_events: Mapped[int] = mapped_column(BigInteger)
    out_of_stock_events: Mapped[int] = mapped_column(BigInteger)
    restock_events: Mapped[int] = mapped_column(BigInteger)
    adjustment_events: Mapped[int] = mapped_column(BigInteger)


class InventoryMovement(Base):
    """Every inventory event as a movement, for turnover and restock cycle times."""

    __tablename__ = "inventory_movements"
    __table_args__ = (
        Index(None, "tenant_id", "product_id", "location_id", "occurred_at"),
        # The monthly stock rollup reads a month of movements, the reports a partial month.
        Index(None, "tenant_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(ID)
    product_id: Mapped[str] = mapped_column(ID)
    location_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime)
    quantity_change: Mapped[int | None] = mapped_column(BigInteger)
    quantity_after: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(255))
    #: The message of the alert this low_stock or out_of_stock raises when it raises one:
    #: stock alerts are recomputed from the movements, and the event's details (sku,
    #: reorder point) are not kept elsewhere.
    alert_message: Mapped[str | None] = mapped_column(Text)


class StockMonth(Base):
    """Rollup: a month of one product's stock movements at one location, summarised.

    Recomputed from ``inventory_movements`` for the months of the days in
    ``rollup_dirty_days`` (:mod:`analytics.stock_months`). Everything here but
    ``closes_micros`` depends on the month's movements alone, so a late movement changes
    its own month only; a restock cycle that crosses months is closed from
    ``first_out_at``, ``first_restock_at`` and the earlier months' ``open_at``: when read
    for a range, and stored in ``closes_micros`` for the report over all history.
    """

    __tablename__ = "stock_monthly"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    product_id: Mapped[str] = mapped_column(ID, primary_key=True)
    location_id: Mapped[str] = mapped_column(ID, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    low_stock: Mapped[int]
    out_of_stock: Mapped[int]
    #: The sum and count of the stated levels (``quantity_after``), and the last one.
    level_sum: Mapped[int] = mapped_column(BigInteger)
    levels: Mapped[int]
    on_hand: Mapped[int | None] = mapped_column(BigInteger)
    #: The first ``out_of_stock`` before the month's first ``restocked`` (any, if none).
    first_out_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_restock_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Restock cycles that open and close after the month's first ``restocked``.
    cycles: Mapped[int]
    cycle_micros: Mapped[int] = mapped_column(BigInteger)
    #: The ``out_of_stock`` still open at the month's end (with nothing open at its start).
    open_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The cycle the month's first ``restocked`` closes, opened this month or carried from
    #: the months before (microseconds); null when it closes none. Not month-local: set by
    #: the refresh for the restock months from the first changed month up to the next
    #: restock month after the last (:func:`analytics.stock_months.close_cycles`).
    closes_micros: Mapped[int | None] = mapped_column(BigInteger)


class UserSession(Base):
    """A finished session: one ``user.logged_out`` with its reported duration.

    Only what the sessions report's percentiles need (:data:`analytics.rollups.MEASURES`):
    when and how long. The event's and the user's ids are not kept (two 37-byte ids a
    session, that nothing read); the raw event has them. Nor a row id: sessions are
    only appended, read by time and deleted by time (a rebuild), so the table has no
    primary key, and the index by time is its only one. The ORM is told the time is
    the key, to map the class; nothing loads sessions as objects.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (Index(None, "tenant_id", "ended_at"),)
    __mapper_args__ = {"primary_key": ["tenant_id", "ended_at"]}

    tenant_id: Mapped[str] = mapped_column(ID)
    ended_at: Mapped[datetime] = mapped_column(DateTime)
    duration_seconds: Mapped[Decimal] = mapped_column(Amount)


class LoginLocation(Base):
    """That a user logged in from a place on a day: the distinct users of days and places.

    The logins are counted in ``city_logins`` (per day and place), not here: a row is
    never rewritten.
    """

    __tablename__ = "login_locations"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    country: Mapped[str] = mapped_column(String(64), primary_key=True)
    city: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)


class UserHour(Base):
    """Rollup: the first and last day a user was active in an hour of the day (0-23, UTC).

    The activity heatmap's distinct users per hour of day, one row per user and hour
    instead of one per user and hour of history. Extended from ``user_activity`` when
    the days that received events are refreshed (the span only grows, so a late event of
    an earlier day moves ``first_day``); a report over all history counts rows, one with
    only ``--since`` or only ``--until`` filters a span end.
    """

    __tablename__ = "user_hours"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "hour_of_day", "user_id"),)

    # The days and the hour before the text columns: no alignment padding between them
    # (a row is 80 bytes, not 88).
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date)
    hour_of_day: Mapped[int] = mapped_column(SmallInteger)
    tenant_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)


class CityUser(Base):
    """Rollup: the first and last day a user (with an id) logged in from a place.

    The geo report's distinct users per place, one row per user and place instead of one
    per user, place and day; extended from ``login_locations`` as :class:`UserHour` is.
    """

    __tablename__ = "city_users"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    country: Mapped[str] = mapped_column(String(64), primary_key=True)
    city: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date)


class CityLogin(Base):
    """Logins per day and place, whoever logged in: the geo report's logins.

    ``login_locations`` summed over users, kept by the writer: a year of it is a row a
    day and place, not one a day, place and user.
    """

    __tablename__ = "city_logins"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    country: Mapped[str] = mapped_column(String(64), primary_key=True)
    city: Mapped[str] = mapped_column(String(128), primary_key=True)
    logins: Mapped[int] = mapped_column(BigInteger)


class Alert(Base):
    """A condition worth a person's attention; one open alert per ``alert_key`` at a time."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(None, "tenant_id", "created_at"),
        # The writer reads a product's stock alerts, open and resolved, by key from a time.
        Index(None, "tenant_id", "alert_key", "created_at"),
        Index(
            "uq_alerts_open_key",
            "tenant_id",
            "alert_key",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    alert_key: Mapped[str] = mapped_column(String(512))
    alert_type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
    event_id: Mapped[str | None] = mapped_column(ID)
    #: For stock alerts: the product and location whose movements they are computed from.
    product_id: Mapped[str | None] = mapped_column(ID)
    location_id: Mapped[str | None] = mapped_column(ID)


class ActiveUsersDaily(Base):
    """Rollup: distinct active users of a day, of the 7 days and of the 30 days ending on it."""

    __tablename__ = "active_users_daily"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    dau: Mapped[int]
    wau: Mapped[int]
    mau: Mapped[int]


class DailyPercentiles(Base):
    """Rollup: a day's count, sum and exact percentiles of one measure, from its source rows.

    Exact percentiles need every value of the day, so they are computed once per day
    that received events (``rollup_dirty_days``) instead of at every report. Measures
    (:data:`analytics.rollups.MEASURES`): ``response_ms`` (raw events' API response
    times) and ``session_seconds`` (the sessions' durations). Percentiles are stored
    rounded to the cent, as the reports print them.
    """

    __tablename__ = "daily_percentiles"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    measure: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int]
    total: Mapped[Decimal] = mapped_column(Amount)
    p50: Mapped[Decimal] = mapped_column(Amount)
    p90: Mapped[Decimal] = mapped_column(Amount)
    p95: Mapped[Decimal] = mapped_column(Amount)


class CohortSize(Base):
    """Rollup: how many users registered on a day (their earliest registration), for retention."""

    __tablename__ = "cohort_sizes"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    users: Mapped[int]


class CohortWeek(Base):
    """Rollup: of the users registered on ``cohort_day``, how many were active in a week.

    ``active_week`` is the Monday of the week, never before the Monday of the cohort's
    week; weeks with no active member have no row. Distinct users of different
    registration days are different users, so a cohort week's retained count is the
    sum of its days' rows.
    """

    __tablename__ = "cohort_weeks"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    cohort_day: Mapped[date] = mapped_column(Date, primary_key=True)
    active_week: Mapped[date] = mapped_column(Date, primary_key=True)
    users: Mapped[int]


class DailyConversion(Base):
    """Rollup: orders created on a day, how many were paid, and how many were abandoned.

    ``abandoned`` counts the orders with no payment within the abandonment window as
    if that window had passed for all of them; the conversion report reads only the
    days for which it has (the latest days it computes from the orders themselves).
    """

    __tablename__ = "daily_conversion"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    orders: Mapped[int]
    paid_orders: Mapped[int]
    abandoned: Mapped[int]


class DailyLogins(Base):
    """Rollup: a day's logins and distinct users who logged in (with a user id)."""

    __tablename__ = "daily_logins"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    logins: Mapped[int] = mapped_column(BigInteger)
    users: Mapped[int]


class RollupDirtyDay(Base):
    """A day that received events since its rollups were last computed.

    Writers bump ``generation``; a refresh deletes only the generation it read, so
    events that arrive during a refresh are not forgotten.
    """

    __tablename__ = "rollup_dirty_days"

    tenant_id: Mapped[str] = mapped_column(ID, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """A key of the HTTP API: it reads and writes one tenant's data. Only its SHA-256 is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (Index(None, "key_hash", unique=True), Index(None, "tenant_id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(String(128))
    #: Hex SHA-256 of the key's text.
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class WarehouseSink(Base):
    """How far one warehouse destination has received the ``events`` table, in ``events.id`` order.

    ``delivered_id``: every event with ``id <= delivered_id`` was accepted by the
    warehouse (or rejected and kept in ``warehouse_rejects``). ``safe_id``: no event
    with ``id <= safe_id`` can still appear (a writer that took a smaller id has
    ended). ``fence_id`` and ``fence_writers``: a bound being confirmed, and the
    writer transactions that must end before it is safe (:mod:`analytics.warehouse.fence`).
    No foreign key to ``events``: ids are only compared, and ``events`` may be
    partitioned.
    """

    __tablename__ = "warehouse_sinks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    delivered_id: Mapped[int] = mapped_column(BigInteger, default=0)
    safe_id: Mapped[int] = mapped_column(BigInteger, default=0)
    fence_id: Mapped[int | None] = mapped_column(BigInteger)
    fence_writers: Mapped[Any] = mapped_column(JSON, nullable=True)
    #: The run that may send now, and until when (a killed run's lease runs out).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    #: Consecutive failed attempts, and when the next may start (backoff).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: When the warehouse last accepted a batch, and how many rows it accepted in all.
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    rows_delivered: Mapped[int] = mapped_column(BigInteger, default=0)


class WarehouseReject(Base):
    """A stored event the warehouse refused (an ``insertErrors`` entry), with the reason.

    Kept here rather than in ``dead_letters``: a dead letter is a message the
    pipeline could not ingest and is replayed into it; this event was ingested and
    counted, only its copy failed, and it is sent again by ``warehouse backfill``.
    """

    __tablename__ = "warehouse_rejects"
    __table_args__ = (Index(None, "sink", "event_row_id", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sink: Mapped[str] = mapped_column(String(255))
    #: ``events.id`` of the refused event.
    event_row_id: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(ID)
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[datetime] = mapped_column(DateTime)
