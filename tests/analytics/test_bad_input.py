"""Nothing vanishes: values a column cannot hold, extreme numbers and dates, invalid list
members, over-long channels and oversized messages each end as a stored event or a dead
letter, never as a failed batch.

Every test that writes runs on PostgreSQL and on SQLite (the ``engine`` fixture).
"""

from __future__ import annotations

import base64

import orjson
import pytest
from sqlalchemy import String, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from analytics.config import Settings
from analytics.db import is_retryable
from analytics.deadletters import Rejected, record_dead_letters, replay
from analytics.errors import InvalidEvent
from analytics.events import parse
from analytics.ingest import Context, plan
from analytics.limits import MAX_AMOUNT, bound
from analytics.models import DeadLetter, ProductSale, StoredEvent
from analytics.storable import CHANNEL_LENGTH, storable_channel
from bridge.relay import dead_letter_item
from tests.analytics.helpers import RECEIVED, apply, make, rows, to_event

CTX = Context()


def order(event_id=None, **data):
    return make("order.created", {"order_id": "o-1", "total_amount": 10, **data}, event_id=event_id)


def refusal(event) -> str:
    with pytest.raises(InvalidEvent) as caught:
        plan(event, CTX)
    return caught.value.summary


def letters(engine) -> list[DeadLetter]:
    with Session(engine) as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def record(engine, rejected: list[Rejected], keep: int = 1 << 16) -> None:
    # Messages over twice ``keep`` bytes are oversized here.
    with Session(engine) as session, session.begin():
        record_dead_letters(session, rejected, limit=2 * keep, keep=keep)


# ------------------------------------------------------------ invalid list members


@pytest.mark.parametrize(
    "document",
    [
        {
            "event_type": "order.created",
            "data": {
                "order_id": "o",
                "total_amount": 1,
                "items": [{"product_id": "p", "quantity": "x"}],
            },
        },
        {
            "event_type": "order.created",
            "data": {"order_id": "o", "total_amount": 1, "items": [{"quantity": 1}]},
        },
        {"event_type": "user.profile_updated", "data": {"fields_updated": ["name", 7]}},
    ],
    ids=["quantity-not-a-number", "item-without-product", "fields-updated-not-a-string"],
)
def test_an_invalid_list_member_is_a_dead_letter_that_can_be_written(engine, document):
    raw = orjson.dumps({"tenant_id": "t", **document})
    with pytest.raises(InvalidEvent) as caught:
        to_event(orjson.loads(raw))
    # marshmallow reports a list member under its integer index; JSON needs text keys.
    assert orjson.dumps(caught.value.messages)
    record(engine, [Rejected.of("events:x:y", raw, RECEIVED, caught.value)])
    (letter,) = letters(engine)
    assert bytes(letter.raw) == raw
    assert "0" in str(letter.messages) or "1" in str(letter.messages)


# ---------------------------------------------------- values the columns cannot hold


@pytest.mark.parametrize(
    ("event", "column"),
    [
        (lambda: make("payment.failed", {"failure_reason": "r" * 256}), "payments.failure_reason"),
        (lambda: order(items=[{"product_id": "p", "name": "n" * 256}]), "product_sales.name"),
        (
            lambda: make("user.logged_in", {"location": {"country": "c" * 65}}),
            "login_locations.country",
        ),
        (lambda: make("user.logged_in", {"location": {"city": "c" * 129}}), "login_locations.city"),
        (lambda: make("order.updated", {"order_id": "o", "status": "s" * 65}), "orders.status"),
        (
            lambda: make("payment.processed", {"payment_method": "m" * 65}),
            "payments.payment_method",
        ),
        (
            lambda: make("user.registered", {"registration_method": "m" * 65}),
            "user_cohorts.registration_method",
        ),
    ],
)
def test_a_string_longer_than_its_column_is_refused_saying_what_and_where(engine, event, column):
    event = event()
    why = refusal(event)
    # The first column found too small is named (a reason may land in a counter
    # dimension and in its own column alike), with the start of the value.
    table, name = column.split(".")
    assert "characters, more than the" in why
    assert f"{table}.{name}" in why or "metric_counters.dimension" in why
    result = apply(engine, [event, order(event_id="fine")])
    assert (result.stored, len(result.refused)) == (1, 1)
    assert rows(engine, StoredEvent.event_id) == [("fine",)]


def test_the_same_string_within_its_column_is_stored(engine):
    result = apply(engine, [make("payment.failed", {"failure_reason": "r" * 255})])
    assert (result.stored, result.refused) == (1, [])


def test_limits_follow_the_model_columns_not_a_second_list():
    column_type = ProductSale.__table__.c.name.type
    assert isinstance(column_type, String) and column_type.length is not None
    length = column_type.length
    assert "product_sales.name" in refusal(
        order(items=[{"product_id": "p", "name": "n" * (length + 1)}])
    )
    assert plan(order(items=[{"product_id": "p", "name": "n" * length}]), CTX)


# ------------------------------------------------------------------- extreme numbers


@pytest.mark.parametrize(
    "data",
    [
        {"total_amount": MAX_AMOUNT + 1},
        {"total_amount": -1},
        {"total_amount": 1e308},
        {"total_amount": 2**63 - 1},
        {"total_amount": 1, "items": [{"product_id": "p", "quantity": 2.5}]},
        {"total_amount": 1, "items": [{"product_id": "p", "quantity": -1}]},
        {"total_amount": 1, "items": [{"product_id": "p", "quantity": 10**9 + 1}]},
        {"total_amount": 1, "items": [{"product_id": "p", "unit_price": -0.01}]},
    ],
    ids=[
        "amount-over-limit",
        "negative-amount",
        "1e308",
        "2^64",
        "fraction",
        "negative-quantity",
        "quantity-over-limit",
        "negative-price",
    ],
)
def test_amounts_and_quantities_outside_their_bounds_are_invalid(data):
    with pytest.raises(InvalidEvent):
        make("order.created", {"order_id": "o", **data})


def test_an_integer_beyond_64_bits_is_a_dead_letter_not_a_float():
    raw = b'{"event_type": "order.created", "tenant_id": "t", "data": {"order_id": "o", '
    with pytest.raises(InvalidEvent):
        parse(
            raw + b'"total_amount": 18446744073709551616}}',
            channel="c",
            received_at=RECEIVED,
            max_bytes=1 << 20,
        )


def test_a_whole_float_quantity_counts_and_a_fraction_is_never_truncated(engine):
    event = order(items=[{"product_id": "p", "quantity": 2.0, "unit_price": 5}])
    assert event.data.items[0].quantity == 2
    apply(engine, [event])
    assert rows(engine, ProductSale.units) == [(2,)]


def test_a_product_of_bounded_numbers_that_overflows_its_column_is_refused(engine):
    event = order(items=[{"product_id": "p", "quantity": 10**9, "unit_price": MAX_AMOUNT}])
    assert "product_sales.revenue" in refusal(event)
    assert apply(engine, [event]).stored == 0


def test_an_amount_at_the_limit_sums_without_overflow_on_both_databases(engine):
    events = [order(event_id=f"e{i}", order_id=f"o{i}", total_amount=MAX_AMOUNT) for i in range(3)]
    assert apply(engine, events).stored == 3


# ----------------------------------------------------------------- dates at the ends


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ],
)
def test_an_event_outside_the_time_window_is_refused(engine, timestamp):
    event = make("user.logged_in", {}, timestamp=timestamp)
    assert "outside the accepted event time window" in refusal(event)
    assert apply(engine, [event]).stored == 0


def test_a_last_sold_at_outside_the_window_is_refused():
    event = make(
        "inventory.out_of_stock", {"product_id": "p", "last_sold_at": "1970-01-01T00:00:00Z"}
    )
    assert "inventory_levels.last_sold_at" in refusal(event)


def test_the_window_is_configurable():
    settings = Settings.from_env({"EVENT_TIME_MIN": "1990-01-01", "EVENT_TIME_MAX": "2200-01-01"})
    ctx = Context.from_settings(settings)
    assert plan(make("user.logged_in", {}, timestamp="1995-06-01T00:00:00Z"), ctx)
    assert plan(make("user.logged_in", {}, timestamp="2150-06-01T00:00:00Z"), ctx)


# ------------------------------------------------------------------------ channels


def test_a_channel_longer_than_its_column_is_stored_shortened_with_a_hash(engine):
    long_a = "events:order:" + "a" * 300
    long_b = "events:order:" + "a" * 299 + "b"
    events = [
        to_event(
            {
                "event_type": "order.created",
                "tenant_id": "t",
                "event_id": "1",
                "data": {"order_id": "o", "total_amount": 1},
            },
            channel=long_a,
        ),
        to_event(
            {
                "event_type": "order.created",
                "tenant_id": "t",
                "event_id": "2",
                "data": {"order_id": "o2", "total_amount": 1},
            },
            channel=long_b,
        ),
    ]
    assert apply(engine, events).stored == 2
    stored = [channel for (channel,) in rows(engine, StoredEvent.channel)]
    assert all(len(channel) == CHANNEL_LENGTH for channel in stored)
    assert len(set(stored)) == 2
    assert stored[0] == storable_channel(long_a)


def test_a_dead_letter_on_a_long_channel_is_kept(engine):
    record(engine, [Rejected("x" * 1000, b"nope", RECEIVED, "invalid JSON")])
    (letter,) = letters(engine)
    assert len(letter.channel) == CHANNEL_LENGTH


# ----------------------------------------------------------------- bounded letters


def test_the_bridge_forwards_only_the_head_of_an_oversized_message():
    settings = Settings(max_payload_bytes=1000, dead_letter_keep_bytes=100)
    data = b"{" + b"x" * 5000
    item = dead_letter_item("events:a:b", data, 1.0, "too big", settings)
    assert base64.b64decode(item[1]) == data[:100]
    assert item[4:] == [5001, bound(data, 1000, 100).sha256]
    # Within the payload limit, a rejected message travels whole.
    small = b"{" + b"x" * 900
    item = dead_letter_item("events:a:b", small, 1.0, "invalid JSON", settings)
    assert base64.b64decode(item[1]) == small


def test_an_oversized_dead_letter_keeps_its_head_size_and_hash(engine):
    big_a, big_b = b"A" * 50 + b"1" * 500, b"A" * 50 + b"2" * 500
    record(
        engine,
        [Rejected("events:a:b", raw, RECEIVED, "too big") for raw in (big_a, big_b)],
        keep=50,
    )
    found = letters(engine)
    # Two messages that share their first bytes stay two dead letters.
    assert [(bytes(f.raw), f.raw_size, f.raw_sha256) for f in found] == [
        (big_a[:50], 550, bound(big_a, 100, 50).sha256),
        (big_b[:50], 550, bound(big_b, 100, 50).sha256),
    ]
    assert "kept the first 50 of 550 bytes" in found[0].error
    record(engine, [Rejected("events:a:b", big_a, RECEIVED, "too big")], keep=50)
    assert len(letters(engine)) == 2


def test_a_truncated_dead_letter_is_not_replayed(engine):
    record(engine, [Rejected("events:a:b", b"{" + b" " * 100, RECEIVED, "too big")], keep=10)
    with Session(engine) as session, session.begin():
        result = replay(session, None, CTX, max_bytes=1 << 20)
    assert (result.ingested, result.still_invalid) == (0, 1)


def test_a_dead_letter_the_database_refuses_is_written_as_a_minimal_row(pg):
    # A claimed tenant id longer than its column fails the full row on PostgreSQL.
    record(pg, [Rejected("events:a:b", b"raw", RECEIVED, "bad", tenant_id="t" * 500)])
    (letter,) = letters(pg)
    assert (bytes(letter.raw), letter.error, letter.tenant_id) == (b"raw", "bad", None)


# ------------------------------------------------------- environment versus the data


def test_an_error_about_the_data_is_not_retried_and_a_schema_error_is(pg):
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    with pg.connect() as conn, pytest.raises(DataError) as data_error:
        conn.execute(text("SELECT CAST(:v AS int)"), {"v": "xx"})
    assert not is_retryable(data_error.value)
    with pg.connect() as conn, pytest.raises(ProgrammingError) as missing:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert is_retryable(missing.value)


def test_database_errors_carry_no_event_content(pg):
    from sqlalchemy import text

    with pg.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE short_text (v varchar(3))"))
        with pytest.raises(DataError) as caught:
            conn.execute(text("INSERT INTO short_text VALUES (:v)"), {"v": "alice@example.com"})
    assert "value too long" in str(caught.value)
    assert "alice@example.com" not in str(caught.value)


def test_settings_repr_hides_passwords_and_the_salt():
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://:s3cret@h:6379/0",
            "DATABASE_URL": "postgresql://u:pw2@h/db",
            "PII_SALT": "salty",
        }
    )
    shown = repr(settings)
    assert "s3cret" not in shown and "pw2" not in shown and "salty" not in shown
    assert "redis://***@h:6379/0" in shown


def test_replay_of_a_letter_whose_value_still_does_not_fit_keeps_it(engine):
    raw = orjson.dumps(
        {
            "event_type": "payment.failed",
            "tenant_id": "t",
            "timestamp": "2024-01-01T00:00:00Z",
            "data": {"failure_reason": "r" * 300},
        }
    )
    record(engine, [Rejected("events:payment:failed", raw, RECEIVED, "too long")])
    with Session(engine) as session, session.begin():
        result = replay(session, None, CTX, max_bytes=1 << 20)
    assert (result.ingested, result.still_invalid) == (0, 1)
    assert "more than the 255 it holds" in letters(engine)[0].error
