"""Envelope and data validation: lenient where the contract is loose, precise errors otherwise."""

from datetime import datetime
from decimal import Decimal

import orjson
import pytest

from analytics.errors import DuplicateRegistration, InvalidEvent
from analytics.events import REGISTRY, OrderCreated, UserRegisteredSchema, parse, register

RECEIVED = datetime(2024, 3, 1, 12, 0, 0)
LIMIT = 1024 * 1024


def load(document, **kwargs):
    raw = document if isinstance(document, bytes | str) else orjson.dumps(document)
    return parse(
        raw, channel="events:order:created", received_at=RECEIVED, max_bytes=LIMIT, **kwargs
    )


def envelope(**overrides):
    document = {
        "event_id": "e-1",
        "event_type": "order.created",
        "tenant_id": "tenant-a",
        "user_id": "user-1",
        "timestamp": "2024-01-01T10:30:00Z",
        "data": {"order_id": "o-1", "total_amount": 174.99, "currency": "usd"},
    }
    document.update(overrides)
    return document


def test_the_seed_test_event_is_accepted():
    event = load(
        {
            "event_type": "order.created",
            "tenant_id": "test-tenant",
            "data": {"order_id": "test-order", "total_amount": 99.99},
        }
    )
    assert event.tenant_id == "test-tenant"
    assert isinstance(event.data, OrderCreated)
    assert event.data.total_amount == Decimal("99.99")
    assert event.data.currency is None  # the deployment's DEFAULT_CURRENCY applies later


def test_fifteen_event_types_are_registered_by_category():
    assert len(REGISTRY) == 15
    assert {spec.category for spec in REGISTRY.values()} == {
        "user",
        "order",
        "payment",
        "inventory",
    }


def test_registering_an_event_type_twice_is_refused():
    with pytest.raises(DuplicateRegistration, match=r"'user\.registered' is already registered"):
        register("user.registered", UserRegisteredSchema)


def test_ids_are_opaque_strings_not_only_uuids():
    event = load(envelope(user_id="u:7", data={"order_id": "ORD 7", "total_amount": 1}))
    assert (event.tenant_id, event.user_id, event.data.order_id) == ("tenant-a", "u:7", "ORD 7")


@pytest.mark.parametrize("bad", ["", "x" * 129, True, 42, 1.5, ["a"]])
def test_ids_outside_one_to_128_characters_are_rejected(bad):
    with pytest.raises(InvalidEvent, match="tenant_id"):
        load(envelope(tenant_id=bad))


def test_missing_event_id_is_derived_from_the_payload_deterministically():
    document = envelope()
    del document["event_id"]
    first, second = load(document), load(dict(reversed(list(document.items()))))
    assert first.event_id == second.event_id
    assert first.event_id_derived
    other = load({**document, "tenant_id": "tenant-b"})
    assert other.event_id != first.event_id


def test_missing_timestamp_is_the_arrival_time_and_flagged():
    document = envelope()
    del document["timestamp"]
    event = load(document)
    assert event.timestamp == RECEIVED
    assert event.timestamp_derived
    assert not load(envelope()).timestamp_derived


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-01-01T10:30:00Z", datetime(2024, 1, 1, 10, 30)),
        ("2024-01-01T10:30:00.123456789Z", datetime(2024, 1, 1, 10, 30, 0, 123456)),
        ("2024-01-01T12:30:00.5+02:00", datetime(2024, 1, 1, 10, 30, 0, 500000)),
        ("2024-01-01T10:30:00", datetime(2024, 1, 1, 10, 30)),
    ],
)
def test_timestamps_are_iso_8601_in_any_precision_and_normalised_to_utc(stamp, expected):
    assert load(envelope(timestamp=stamp)).timestamp == expected


@pytest.mark.parametrize("stamp", ["yesterday", "2024-13-01T00:00:00Z", 1704067200, ""])
def test_a_present_but_unparseable_timestamp_is_an_error(stamp):
    with pytest.raises(InvalidEvent, match="timestamp: Not a valid ISO 8601 timestamp"):
        load(envelope(timestamp=stamp))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "invalid JSON"),
        (b'{"event_type": ', "invalid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"order.created"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object, got null"),
    ],
)
def test_undecodable_input_says_what_is_wrong(raw, message):
    with pytest.raises(InvalidEvent, match=message):
        load(raw)


def test_envelope_needs_event_type_and_tenant_id():
    with pytest.raises(InvalidEvent) as info:
        load({"data": {}})
    assert set(info.value.messages) == {"event_type", "tenant_id"}
    assert "Missing data for required field" in str(info.value)


def test_data_must_be_an_object_when_present():
    with pytest.raises(InvalidEvent, match="data: Not a valid mapping"):
        load(envelope(data=[1, 2]))


def test_required_data_fields_are_named_in_the_error():
    with pytest.raises(InvalidEvent) as info:
        load(envelope(data={"total_amount": "lots"}))
    assert info.value.messages == {
        "data": {
            "order_id": ["Missing data for required field."],
            "total_amount": ["Not a valid number."],
        }
    }


def test_wrong_types_inside_items_are_reported_with_their_position():
    data = {"order_id": "o", "total_amount": 5, "items": [{"product_id": "p", "quantity": "two"}]}
    with pytest.raises(InvalidEvent, match=r"data\.items\.0\.quantity: Not a valid integer"):
        load(envelope(data=data))


def test_documented_defaults_fill_optional_fields():
    data = {"order_id": "o", "total_amount": 10, "items": [{"product_id": "p", "unit_price": 2.5}]}
    item = load(envelope(data=data)).data.items[0]
    assert (item.quantity, item.total_price, item.name) == (1, Decimal("2.5"), None)
    failed = load(envelope(event_type="payment.failed", data={}))
    assert failed.data.failure_reason == "unknown"


def test_oversized_payload_is_rejected_before_parsing():
    raw = b'{"x": "' + b"a" * LIMIT + b'"}'
    with pytest.raises(InvalidEvent, match=r"over the limit of 1048576"):
        load(raw)


def test_unknown_event_types_with_a_valid_envelope_are_accepted_untyped():
    event = load(envelope(event_type="wishlist.added", data={"anything": [1, 2]}))
    assert not event.known
    assert event.data == {"anything": [1, 2]}


def test_response_time_comes_from_metadata():
    assert load(envelope(metadata={"response_time_ms": 12.5})).response_time_ms == 12.5
    with pytest.raises(InvalidEvent, match="response_time_ms"):
        load(envelope(metadata={"response_time_ms": "slow"}))


def test_pii_is_stored_only_as_a_salted_hash_when_a_salt_is_set():
    document = envelope(
        event_type="user.registered",
        data={"user_id": "u", "email": "ada@example.com"},
        metadata={"ip_address": "10.1.2.3"},
    )
    plain = load(document)
    hashed = load(document, pii_salt="pepper")
    assert plain.payload["data"]["email"] == "ada@example.com"
    stored = orjson.dumps(hashed.payload)
    assert b"ada@example.com" not in stored and b"10.1.2.3" not in stored
    assert hashed.payload["data"]["email"].startswith("hmac-sha256:")
    assert (
        hashed.payload["data"]["email"] != load(document, pii_salt="other").payload["data"]["email"]
    )


@pytest.mark.parametrize(
    "document",
    [
        envelope(tenant_id="tenant\x00a"),
        envelope(data={"order_id": "o-1", "total_amount": 1, "note": ["a\x00"]}),
        envelope(metadata={"user_agent\x00": "x"}),
    ],
)
def test_a_nul_character_anywhere_makes_an_event_invalid(document):
    # PostgreSQL text cannot hold it: rejected here, not failed in the writer.
    with pytest.raises(InvalidEvent, match="NUL character") as info:
        load(document)
    assert info.value.event_type == "order.created"


def test_an_escaped_backslash_before_u0000_is_not_a_nul():
    event = load(envelope(data={"order_id": "o-1", "total_amount": 1, "note": "\\u0000"}))
    assert event.payload["data"]["note"] == "\\u0000"
