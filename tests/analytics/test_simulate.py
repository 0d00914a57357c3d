"""Tests of loadgen (the simulator): seed examples, channels, envelopes and the simulated stream.

Pure: no database, no Redis. Each test is named after the behaviour it proves.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest

from loadgen import (
    EVENT_TYPES,
    SEED_EXAMPLES,
    Simulator,
    channel_for,
    envelope,
    seed_examples,
)

START = datetime(2024, 3, 1, tzinfo=UTC)
ENVELOPE_KEYS = {"event_id", "event_type", "tenant_id", "user_id", "timestamp", "data", "metadata"}
METADATA_KEYS = {"ip_address", "user_agent", "session_id", "request_id"}
CHRONO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
MONEY_KEYS = {
    "subtotal",
    "tax_amount",
    "shipping_amount",
    "total_amount",
    "unit_price",
    "total_price",
    "amount",
    "refund_amount",
}
FAILURE_REASONS = {
    "insufficient_funds",
    "card_declined",
    "expired_card",
    "incorrect_cvc",
    "fraud_suspected",
    "processing_error",
}


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    """A two-day, three-tenant stream, big enough for every follow-up to show up."""
    return list(Simulator(tenants=3, seed=7, start=START, days=2).events(6000))


@pytest.fixture(scope="module")
def crowd() -> list[dict[str, Any]]:
    """A stream with many users, so that registrations are frequent all day long."""
    return list(Simulator(seed=9, start=START, users_per_tenant=500).events(8000))


def cents(value: Any) -> int:
    """A JSON money value as integer cents; fails unless it is a float/int with <= 2 decimals."""
    assert type(value) in (int, float), f"{value!r} is not a plain JSON number"
    whole = round(float(value) * 100)
    assert abs(value * 100 - whole) < 1e-6, f"{value!r} has more than two decimals"
    return whole


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def by_time(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda event: event["timestamp"])


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    found = [event for event in events if event["event_type"] == event_type]
    assert found, f"no {event_type} in the stream: the test would prove nothing"
    return found


# ----------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_stream() -> None:
    first = list(Simulator(seed=3, start=START).events(1500))
    second = list(Simulator(seed=3, start=START).events(1500))
    assert json.dumps(first) == json.dumps(second)


def test_different_seeds_give_different_streams() -> None:
    first = list(Simulator(seed=3, start=START).events(500))
    second = list(Simulator(seed=4, start=START).events(500))
    assert {event["event_id"] for event in first}.isdisjoint(event["event_id"] for event in second)
    assert [event["event_type"] for event in first] != [event["event_type"] for event in second]


def test_each_call_to_events_replays_the_stream_from_the_seed() -> None:
    simulator = Simulator(seed=11, start=START)
    assert list(simulator.events(800)) == list(simulator.events(800))


def test_events_yields_exactly_the_requested_count() -> None:
    simulator = Simulator(seed=1, start=START)
    for count in (0, 1, 37, 1000):
        assert len(list(simulator.events(count))) == count


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        Simulator().events(-1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"tenants": 0},
        {"days": 0},
        {"users_per_tenant": 1},
        {"products_per_tenant": 0},
        {"currencies": ()},
        {"currencies": ("US",)},
    ],
)
def test_invalid_simulator_arguments_are_rejected(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Simulator(**arguments)


# ----------------------------------------------------------------------------- mix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_2000_events_contain_all_15_event_types(seed: int) -> None:
    types = Counter(event["event_type"] for event in Simulator(seed=seed).events(2000))
    assert set(types) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 15


def test_tenant_ids_are_opaque_tenant_n_strings() -> None:
    simulator = Simulator(tenants=3, seed=5, start=START)
    tenants = Counter(event["tenant_id"] for event in simulator.events(3000))
    assert simulator.tenant_ids == ["tenant-1", "tenant-2", "tenant-3"]
    assert set(tenants) == {"tenant-1", "tenant-2", "tenant-3"}


# ------------------------------------------------------------------------ envelopes


def test_every_envelope_is_json_serialisable_and_has_the_required_keys(
    stream: list[dict[str, Any]],
) -> None:
    for event in stream:
        assert json.loads(json.dumps(event)) == event
        assert set(event) == ENVELOPE_KEYS
        assert uuid.UUID(event["event_id"]).version == 4
        assert event["event_type"] in EVENT_TYPES
        assert event["tenant_id"].startswith("tenant-")
        assert event["user_id"] is None or isinstance(event["user_id"], str)
        assert CHRONO_UTC.match(event["timestamp"]), event["timestamp"]
        assert isinstance(event["data"], dict)
        metadata = event["metadata"]
        assert METADATA_KEYS <= set(metadata) <= METADATA_KEYS | {"response_time_ms"}
        assert all(isinstance(metadata[key], str) and metadata[key] for key in METADATA_KEYS)
        if "response_time_ms" in metadata:
            assert type(metadata["response_time_ms"]) is int
            assert metadata["response_time_ms"] > 0
    assert len({event["event_id"] for event in stream}) == len(stream)


def test_about_half_the_events_report_a_response_time(stream: list[dict[str, Any]]) -> None:
    timed = sum("response_time_ms" in event["metadata"] for event in stream)
    assert 0.4 < timed / len(stream) < 0.6


def test_only_system_raised_inventory_alerts_lack_an_acting_user(
    stream: list[dict[str, Any]],
) -> None:
    anonymous = {event["event_type"] for event in stream if event["user_id"] is None}
    assert anonymous == {"inventory.low_stock", "inventory.out_of_stock"}


def test_timestamps_fall_within_the_period_and_mostly_increase(
    stream: list[dict[str, Any]],
) -> None:
    end = START + timedelta(days=2)
    moments = [parse(event["timestamp"]) for event in stream]
    assert all(START <= moment < end for moment in moments)
    assert moments[-1] - moments[0] > timedelta(days=1, hours=12)  # spread, not bunched
    decreases = sum(later < earlier for earlier, later in pairwise(moments))
    assert 0 < decreases < len(stream) * 0.03


def test_late_delivered_events_are_never_registrations(crowd: list[dict[str, Any]]) -> None:
    latest = ""
    for event in crowd:
        if event["timestamp"] < latest:
            assert event["event_type"] != "user.registered"
        latest = max(latest, event["timestamp"])


def test_default_start_is_midnight_utc_the_given_days_before_today() -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulator = Simulator(days=3)
    assert simulator.start == today - timedelta(days=3)
    assert simulator.end == today
    for event in simulator.events(300):
        assert today - timedelta(days=3) <= parse(event["timestamp"]) < today


def test_amounts_are_plain_floats_with_at_most_two_decimals(
    stream: list[dict[str, Any]],
) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in MONEY_KEYS:
                    cents(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            assert value is None or type(value) in (str, int, float, bool), repr(value)

    for event in stream:
        walk(event["data"])


# ---------------------------------------------------------------------------- users


@pytest.mark.parametrize("name", ["stream", "crowd"])
def test_users_register_before_their_other_events(
    name: str, request: pytest.FixtureRequest
) -> None:
    events: list[dict[str, Any]] = request.getfixturevalue(name)
    registered: dict[str, tuple[int, str]] = {}
    for position, event in enumerate(events):
        data = event["data"]
        if event["event_type"] == "user.registered":
            assert data["user_id"] == event["user_id"]
            assert data["user_id"] not in registered, "registered twice"
            registered[data["user_id"]] = (position, event["timestamp"])
            continue
        actors = {event["user_id"]}
        actors |= {data.get(key) for key in ("customer_id", "cancelled_by", "restocked_by")}
        actors |= {data.get("adjusted_by"), data.get("user_id")}
        for actor in actors - {None}:
            assert actor in registered, f"{event['event_type']} by unregistered {actor}"
            assert registered[actor][1] < event["timestamp"]
    assert len(registered) > 100


def test_user_events_name_the_acting_user_in_data(stream: list[dict[str, Any]]) -> None:
    for event in stream:
        if event["event_type"].startswith("user."):
            assert event["data"]["user_id"] == event["user_id"]


def test_logins_carry_a_location_and_logouts_the_session_duration(
    stream: list[dict[str, Any]],
) -> None:
    logins: dict[str, dict[str, Any]] = {}
    for event in of_type(stream, "user.logged_in"):
        location = event["data"]["location"]
        assert set(location) == {"country", "city"}
        assert len(location["country"]) == 2 and location["city"]
        logins[event["metadata"]["session_id"]] = event
    for event in of_type(stream, "user.logged_out"):
        login = logins[event["metadata"]["session_id"]]
        assert login["user_id"] == event["user_id"]
        elapsed = parse(event["timestamp"]) - parse(login["timestamp"])
        duration = event["data"]["session_duration_seconds"]
        assert type(duration) is int
        assert duration == elapsed // timedelta(seconds=1)


def test_profile_updates_report_previous_and_new_values_of_the_updated_fields(
    stream: list[dict[str, Any]],
) -> None:
    for event in of_type(stream, "user.profile_updated"):
        data = event["data"]
        assert data["fields_updated"]
        assert set(data["previous_values"]) == set(data["fields_updated"])
        assert set(data["new_values"]) == set(data["fields_updated"])


# --------------------------------------------------------------------------- orders


def test_order_totals_equal_item_totals_plus_tax_and_shipping_to_the_cent(
    stream: list[dict[str, Any]],
) -> None:
    for event in of_type(stream, "order.created"):
        data = event["data"]
        for item in data["items"]:
            assert cents(item["total_price"]) == item["quantity"] * cents(item["unit_price"])
        assert cents(data["subtotal"]) == sum(cents(item["total_price"]) for item in data["items"])
        assert cents(data["total_amount"]) == (
            cents(data["subtotal"]) + cents(data["tax_amount"]) + cents(data["shipping_amount"])
        )


def test_orders_have_one_to_four_items_in_a_tenant_currency_for_the_acting_customer(
    stream: list[dict[str, Any]],
) -> None:
    for event in of_type(stream, "order.created"):
        data = event["data"]
        assert 1 <= len(data["items"]) <= 4 and data["items_count"] == len(data["items"])
        assert all(item["quantity"] >= 1 for item in data["items"])
        assert len({item["product_id"] for item in data["items"]}) == len(data["items"])
        assert data["currency"] in ("USD", "EUR")
        assert data["customer_id"] == event["user_id"]
        assert data["location_id"] and data["order_number"].startswith("ORD-2024-")


def test_order_status_changes_follow_the_previous_status(stream: list[dict[str, Any]]) -> None:
    status: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for event in by_time(stream):
        kind, data = event["event_type"], event["data"]
        if kind == "order.created":
            status[data["order_id"]] = "pending"
        elif kind == "order.updated":
            assert (data["previous_status"], data["status"]) in {
                ("pending", "processing"),
                ("processing", "shipped"),
            }
            assert status[data["order_id"]] == data["previous_status"]
            status[data["order_id"]] = data["status"]
        elif kind == "order.fulfilled":
            assert status[data["order_id"]] == "shipped"
            status[data["order_id"]] = "fulfilled"
        elif kind == "order.cancelled":
            assert status[data["order_id"]] in ("pending", "processing")
            status[data["order_id"]] = "cancelled"
        seen[kind] += 1
    assert seen["order.updated"] and seen["order.fulfilled"] and seen["order.cancelled"]


# ------------------------------------------------------------------------- payments


def test_payments_match_their_order_amount_and_currency(stream: list[dict[str, Any]]) -> None:
    orders = {event["data"]["order_id"]: event for event in of_type(stream, "order.created")}
    paid: Counter[str] = Counter()
    for kind in ("payment.processed", "payment.failed"):
        for event in of_type(stream, kind):
            data = event["data"]
            order = orders[data["order_id"]]
            assert order["tenant_id"] == event["tenant_id"]
            assert cents(data["amount"]) == cents(order["data"]["total_amount"])
            assert data["currency"] == order["data"]["currency"]
            if kind == "payment.processed":
                paid[data["order_id"]] += 1
    assert max(paid.values()) == 1, "an order was paid twice"


def test_payment_failures_name_a_known_failure_reason(stream: list[dict[str, Any]]) -> None:
    for event in of_type(stream, "payment.failed"):
        assert event["data"]["failure_reason"] in FAILURE_REASONS
        assert event["data"]["retry_count"] >= 1


def test_refunds_never_exceed_their_payment(stream: list[dict[str, Any]]) -> None:
    payments = {
        event["data"]["payment_id"]: event for event in of_type(stream, "payment.processed")
    }
    refunded: defaultdict[str, int] = defaultdict(int)
    for event in of_type(stream, "payment.refunded"):
        data = event["data"]
        payment = payments[data["payment_id"]]["data"]
        assert data["order_id"] == payment["order_id"]
        assert cents(data["refund_amount"]) > 0
        refunded[data["payment_id"]] += cents(data["refund_amount"])
        whole = cents(data["refund_amount"]) == cents(payment["amount"])
        assert data["refund_type"] == ("full" if whole else "partial")
    for payment_id, total in refunded.items():
        assert total <= cents(payments[payment_id]["data"]["amount"])


def test_cancelled_orders_refund_what_was_paid(stream: list[dict[str, Any]]) -> None:
    paid = {
        event["data"]["order_id"]: cents(event["data"]["amount"])
        for event in of_type(stream, "payment.processed")
    }
    for event in of_type(stream, "order.cancelled"):
        data = event["data"]
        assert cents(data["refund_amount"]) == paid.get(data["order_id"], 0)


# ------------------------------------------------------------------------ inventory


def test_inventory_levels_follow_sales_exactly(stream: list[dict[str, Any]]) -> None:
    """Between two inventory reports on a product at a location, only sales move the level."""
    level: dict[tuple[str, str, str], int] = {}
    checked = 0
    for event in by_time(stream):
        kind, data, tenant = event["event_type"], event["data"], event["tenant_id"]
        if kind == "order.created":
            for item in data["items"]:
                key = (tenant, item["product_id"], data["location_id"])
                if key in level:
                    level[key] -= item["quantity"]
                    assert level[key] >= 0, "sold stock that was not there"
            continue
        if not kind.startswith("inventory."):
            continue
        key = (tenant, data["product_id"], data["location_id"])
        if kind == "inventory.low_stock":
            before = after = data["current_quantity"]
        elif kind == "inventory.out_of_stock":
            before = after = 0
        elif kind == "inventory.restocked":
            after = data["new_quantity"]
            before = after - data["quantity_added"]
        else:
            before, after = data["previous_quantity"], data["new_quantity"]
        assert before >= 0 and after >= 0
        if key in level:
            assert before == level[key], event
            checked += 1
        level[key] = after
    assert checked > 50


def test_low_stock_alerts_report_a_quantity_below_the_reorder_point(
    stream: list[dict[str, Any]],
) -> None:
    for event in of_type(stream, "inventory.low_stock"):
        data = event["data"]
        assert 0 <= data["current_quantity"] < data["reorder_point"] <= data["reorder_quantity"]


def test_restocks_add_a_positive_quantity(stream: list[dict[str, Any]]) -> None:
    for event in of_type(stream, "inventory.restocked"):
        data = event["data"]
        assert data["quantity_added"] > 0
        assert data["new_quantity"] >= data["quantity_added"]
        assert data["supplier"]


def test_out_of_stock_follows_the_last_sale(stream: list[dict[str, Any]]) -> None:
    for event in of_type(stream, "inventory.out_of_stock"):
        assert CHRONO_UTC.match(event["data"]["last_sold_at"])
        assert event["data"]["last_sold_at"] <= event["timestamp"]


# ------------------------------------------------------------------------- channels


def test_channel_for_maps_every_type_to_events_category_action() -> None:
    for event_type in EVENT_TYPES:
        category, action = event_type.split(".")
        assert channel_for(event_type) == f"events:{category}:{action}"
    assert channel_for("order.created") == "events:order:created"
    assert channel_for("wishlist.added") == "events:wishlist:added"


def test_channel_for_prefix_replaces_events() -> None:
    assert channel_for("order.created", prefix="staging:events") == "staging:events:order:created"
    assert channel_for("user.logged_in", "staging") == "staging:user:logged_in"
    assert channel_for("payment.failed", "") == "payment:failed"


@pytest.mark.parametrize("event_type", ["", "order", ".created", "order."])
def test_channel_for_rejects_a_type_without_category_and_action(event_type: str) -> None:
    with pytest.raises(ValueError):
        channel_for(event_type)


# -------------------------------------------------------------------- seed examples


def test_seed_examples_cover_all_15_types_with_the_seed_data() -> None:
    examples = seed_examples()
    assert [example["event_type"] for example in examples] == list(EVENT_TYPES)
    assert set(SEED_EXAMPLES) == set(EVENT_TYPES)
    for example in examples:
        assert set(example) == ENVELOPE_KEYS
        assert example["tenant_id"] == "test-tenant"
        assert example["data"] == SEED_EXAMPLES[example["event_type"]]
        assert json.loads(json.dumps(example)) == example


def test_seed_example_data_is_the_contract_data() -> None:
    order = SEED_EXAMPLES["order.created"]
    assert order["total_amount"] == 174.99 and order["currency"] == "USD"
    assert order["items"] == [
        {
            "product_id": "uuid",
            "sku": "PROD-001",
            "name": "Product Name",
            "quantity": 2,
            "unit_price": 49.99,
            "total_price": 99.98,
        }
    ]
    assert SEED_EXAMPLES["user.logged_in"]["location"] == {
        "country": "US",
        "city": "San Francisco",
    }
    assert SEED_EXAMPLES["payment.failed"]["failure_reason"] == "insufficient_funds"
    assert SEED_EXAMPLES["inventory.low_stock"]["current_quantity"] == 5
    assert SEED_EXAMPLES["inventory.adjusted"]["new_quantity"] == 48
    profile = SEED_EXAMPLES["user.profile_updated"]
    assert set(profile["previous_values"]) == set(profile["fields_updated"])
    assert set(profile["new_values"]) == set(profile["fields_updated"])


def test_seed_examples_have_coherent_actors_and_distinct_deterministic_event_ids() -> None:
    examples = seed_examples()
    assert [example["event_id"] for example in examples] == [
        example["event_id"] for example in seed_examples()
    ]
    assert len({example["event_id"] for example in examples}) == 15
    other_tenant = {example["event_id"] for example in seed_examples("tenant-b")}
    assert other_tenant.isdisjoint(example["event_id"] for example in examples)
    for example in examples:
        data = example["data"]
        actor = data.get("user_id") or data.get("customer_id") or data.get("restocked_by")
        actor = actor or data.get("cancelled_by") or data.get("adjusted_by")
        if example["event_type"] in ("inventory.low_stock", "inventory.out_of_stock"):
            assert example["user_id"] is None
        else:
            assert example["user_id"] == (actor or "uuid")


def test_seed_examples_use_the_given_timestamp_one_second_apart() -> None:
    examples = seed_examples(timestamp=datetime(2025, 6, 1, 9, 30, tzinfo=UTC))
    assert examples[0]["timestamp"] == "2025-06-01T09:30:00.000000Z"
    assert examples[14]["timestamp"] == "2025-06-01T09:30:14.000000Z"
    assert seed_examples()[0]["timestamp"] == "2024-01-01T00:00:00.000000Z"


def test_seed_examples_hand_out_copies_of_the_seed_data() -> None:
    example = seed_examples()[4]
    example["data"]["items"][0]["quantity"] = 99
    assert SEED_EXAMPLES["order.created"]["items"][0]["quantity"] == 2


# ------------------------------------------------------------------------- envelope


def test_envelope_writes_utc_timestamps_with_microseconds_and_z() -> None:
    def stamp(moment: datetime) -> str:
        made = envelope("order.created", {}, tenant_id="t", user_id=None, timestamp=moment)
        return str(made["timestamp"])

    assert stamp(datetime(2024, 1, 1, 12, 0, 0, 123456)) == "2024-01-01T12:00:00.123456Z"
    plus_two = timezone(timedelta(hours=2))
    assert stamp(datetime(2024, 1, 1, 14, 0, tzinfo=plus_two)) == "2024-01-01T12:00:00.000000Z"


def test_envelope_derives_a_deterministic_event_id_and_metadata_when_missing() -> None:
    def make(tenant: str) -> dict[str, Any]:
        return envelope(
            "user.logged_out",
            {"user_id": "u-1", "session_duration_seconds": 60},
            tenant_id=tenant,
            user_id="u-1",
            timestamp=START,
        )

    first = make("acme")
    assert first == make("acme")
    assert first["event_id"] != make("globex")["event_id"]
    assert uuid.UUID(first["event_id"]).version == 4
    assert set(first["metadata"]) == METADATA_KEYS
    assert list(first) == [
        "event_id",
        "event_type",
        "tenant_id",
        "user_id",
        "timestamp",
        "data",
        "metadata",
    ]


def test_envelope_keeps_the_given_event_id_and_metadata() -> None:
    metadata = {"ip_address": "10.0.0.1", "user_agent": "x", "session_id": "s", "request_id": "r"}
    made = envelope(
        "order.updated",
        {"order_id": "o-1"},
        tenant_id="test-tenant",
        user_id=None,
        timestamp=START,
        event_id="evt-1",
        metadata=metadata,
    )
    assert made["event_id"] == "evt-1" and made["metadata"] == metadata
    assert made["user_id"] is None and made["data"] == {"order_id": "o-1"}
