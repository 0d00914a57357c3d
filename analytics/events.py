"""Events: the envelope, the marshmallow schema of each event type, and the registry.

``parse`` turns the bytes a producer published into a typed, frozen :class:`Event`
or raises :class:`InvalidEvent` with messages a person can act on. The rules are
DESIGN.md's "lenient where the contract is loose": opaque string IDs, an
``event_id`` derived from the payload when missing, the bridge's arrival time
when ``timestamp`` is missing, and only the data fields an aggregate cannot do
without are required. Every default is written next to its field below.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, post_load, validate

from analytics.compiled import loader_for
from analytics.config import DEFAULT_MAX_JSON_DEPTH
from analytics.errors import DuplicateRegistration, InvalidEvent
from analytics.limits import MAX_AMOUNT, MAX_QUANTITY, depth_problem

ID_MAX_LENGTH = 128
#: Keys whose values are personal data, hashed when ``PII_SALT`` is set.
PII_KEYS = frozenset({"email", "ip_address"})


# --------------------------------------------------------------------------- fields


class Id(fields.Field):
    """An opaque identifier: a string of 1-128 characters, not only a UUID."""

    default_error_messages = {
        "invalid": "Not a valid identifier: expected a string of 1-128 characters.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        # A number is a wrong type, not an id: 42 and "42" must not silently merge.
        if not isinstance(value, str) or not 1 <= len(value) <= ID_MAX_LENGTH:
            raise self.make_error("invalid")
        return value


class Timestamp(fields.Field):
    """ISO 8601 with any number of fraction digits and ``Z`` or an offset; naive means UTC."""

    default_error_messages = {
        "invalid": "Not a valid ISO 8601 timestamp (e.g. 2024-01-01T00:00:00Z).",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return parse_timestamp(value, self.make_error("invalid"))


def parse_timestamp(value: str, error: Exception | None = None) -> datetime:
    """A naive UTC datetime from an ISO 8601 string (Rust's chrono writes nine fraction digits)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise error or ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _money(**kwargs: Any) -> fields.Decimal:
    """An amount from 0 to MAX_AMOUNT (see analytics.limits: counters sum them)."""
    return fields.Decimal(allow_nan=False, validate=validate.Range(min=0, max=MAX_AMOUNT), **kwargs)


def _text(**kwargs: Any) -> fields.String:
    return fields.String(allow_none=True, load_default=None, **kwargs)


def _optional_id() -> Id:
    return Id(allow_none=True, load_default=None)


class Quantity(fields.Integer):
    """A whole number of units: 2 and 2.0 are 2; 2.5 is refused, never cut to 2."""

    default_error_messages = {"fraction": "Not a whole number."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("fraction")
        return super()._deserialize(value, attr, data, **kwargs)


def _quantity(low: int = 0, **kwargs: Any) -> Quantity:
    """Units from ``low`` (0, or -MAX_QUANTITY for a stock level) to MAX_QUANTITY."""
    return Quantity(validate=validate.Range(min=low, max=MAX_QUANTITY), **kwargs)


def _count(low: int = 0) -> Quantity:
    return _quantity(low, allow_none=True, load_default=None)


def _level() -> Quantity:
    """A stock level: negative when backorders exceed what is on hand."""
    return _count(low=-MAX_QUANTITY)


class Currency(fields.String):
    """A 3-letter currency code, upper-cased; missing means the deployment's default currency."""

    default_error_messages = {"currency": "Not a 3-letter currency code."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) != 3 or not text.isalpha():
            raise self.make_error("currency")
        return text.upper()


# ------------------------------------------------------------------- typed payloads


@dataclass(frozen=True, slots=True)
class UserRegistered:
    user_id: str | None
    email: str | None
    tenant_slug: str | None
    registration_method: str
    referral_source: str


@dataclass(frozen=True, slots=True)
class UserLoggedIn:
    user_id: str | None
    login_method: str | None
    device_type: str | None
    country: str | None
    city: str | None


@dataclass(frozen=True, slots=True)
class UserLoggedOut:
    user_id: str | None
    session_duration_seconds: Decimal | None


@dataclass(frozen=True, slots=True)
class UserProfileUpdated:
    user_id: str | None
    fields_updated: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str
    sku: str | None
    name: str | None
    quantity: int
    unit_price: Decimal
    total_price: Decimal


@dataclass(frozen=True, slots=True)
class OrderCreated:
    order_id: str
    order_number: str | None
    customer_id: str | None
    location_id: str | None
    items_count: int | None
    subtotal: Decimal | None
    tax_amount: Decimal | None
    shipping_amount: Decimal | None
    total_amount: Decimal
    currency: str | None
    items: tuple[OrderItem, ...]


@dataclass(frozen=True, slots=True)
class OrderUpdated:
    order_id: str
    order_number: str | None
    status: str | None
    previous_status: str | None


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order_id: str
    order_number: str | None
    cancellation_reason: str | None
    refund_amount: Decimal | None


@dataclass(frozen=True, slots=True)
class OrderFulfilled:
    order_id: str
    order_number: str | None
    fulfillment_method: str | None
    carrier: str | None


@dataclass(frozen=True, slots=True)
class PaymentProcessed:
    payment_id: str | None
    order_id: str | None
    amount: Decimal | None
    currency: str | None
    payment_method: str | None
    gateway: str | None


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    payment_id: str | None
    order_id: str | None
    amount: Decimal | None
    currency: str | None
    failure_reason: str
    error_code: str | None


@dataclass(frozen=True, slots=True)
class PaymentRefunded:
    payment_id: str | None
    order_id: str | None
    refund_amount: Decimal
    refund_reason: str | None


@dataclass(frozen=True, slots=True)
class InventoryLowStock:
    product_id: str
    sku: str | None
    location_id: str
    current_quantity: int | None
    reorder_point: int | None


@dataclass(frozen=True, slots=True)
class InventoryOutOfStock:
    product_id: str
    sku: str | None
    location_id: str
    last_sold_at: datetime | None


@dataclass(frozen=True, slots=True)
class InventoryRestocked:
    product_id: str
    sku: str | None
    location_id: str
    quantity_added: int | None
    new_quantity: int | None


@dataclass(frozen=True, slots=True)
class InventoryAdjusted:
    product_id: str
    sku: str | None
    location_id: str
    previous_quantity: int | None
    new_quantity: int | None
    adjustment_reason: str | None


# ------------------------------------------------------------------------- schemas


class DataSchema(Schema):
    """Base of every ``data`` schema: unknown keys are kept in the raw store, not here."""

    target: type

    class Meta:
        unknown = EXCLUDE

    @post_load
    def make(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return self.target(**values)


class UserRegisteredSchema(DataSchema):
    target = UserRegistered
    user_id = _optional_id()
    email = _text()
    tenant_slug = _text()
    registration_method = fields.String(load_default="email")
    referral_source = fields.String(load_default="organic")


class UserLoggedInSchema(DataSchema):
    target = UserLoggedIn
    user_id = _optional_id()
    login_method = _text()
    device_type = _text()
    location = fields.Dict(allow_none=True, load_default=None)

    @post_load
    def make(self, values: dict[str, Any], **kwargs: Any) -> Any:
        location = values.pop("location", None) or {}
        country, city = location.get("country"), location.get("city")
        for key, value in (("country", country), ("city", city)):
            if value is not None and not isinstance(value, str):
                raise ValidationError({"location": {key: ["Not a valid string."]}})
        return UserLoggedIn(country=country or None, city=city or None, **values)


class UserLoggedOutSchema(DataSchema):
    target = UserLoggedOut
    user_id = _optional_id()
    session_duration_seconds = _money(allow_none=True, load_default=None)


class UserProfileUpdatedSchema(DataSchema):
    target = UserProfileUpdated
    user_id = _optional_id()
    fields_updated = fields.List(fields.String(), load_default=list)

    @post_load
    def make(self, values: dict[str, Any], **kwargs: Any) -> Any:
        values["fields_updated"] = tuple(values["fields_updated"])
        return UserProfileUpdated(**values)


class OrderItemSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    product_id = Id(required=True)
    sku = _text()
    name = _text()
    quantity = _quantity(load_default=1)
    unit_price = _money(load_default=Decimal(0))
    total_price = _money(allow_none=True, load_default=None)

    @post_load
    def make(self, values: dict[str, Any], **kwargs: Any) -> OrderItem:
        if values["total_price"] is None:  # default: quantity x unit price
            values["total_price"] = values["unit_price"] * values["quantity"]
        return OrderItem(**values)


class OrderCreatedSchema(DataSchema):
    target = OrderCreated
    order_id = Id(required=True)
    order_number = _text()
    customer_id = _optional_id()
    location_id = _optional_id()
    items_count = _count()
    subtotal = _money(allow_none=True, load_default=None)
    tax_amount = _money(allow_none=True, load_default=None)
    shipping_amount = _money(allow_none=True, load_default=None)
    total_amount = _money(required=True)
    currency = Currency(allow_none=True, load_default=None)
    items = fields.List(fields.Nested(OrderItemSchema), load_default=list)

    @post_load
    def make(self, values: dict[str, Any], **kwargs: Any) -> Any:
        values["items"] = tuple(values["items"])
        return OrderCreated(**values)


class OrderUpdatedSchema(DataSchema):
    target = OrderUpdated
    order_id = Id(required=True)
    order_number = _text()
    status = _text()
    previous_status = _text()


class OrderCancelledSchema(DataSchema):
    target = OrderCancelled
    order_id = Id(required=True)
    order_number = _text()
    cancellation_reason = _text()
    refund_amount = _money(allow_none=True, load_default=None)


class OrderFulfilledSchema(DataSchema):
    target = OrderFulfilled
    order_id = Id(required=True)
    order_number = _text()
    fulfillment_method = _text()
    carrier = _text()


class PaymentProcessedSchema(DataSchema):
    target = PaymentProcessed
    payment_id = _optional_id()
    order_id = _optional_id()
    amount = _money(allow_none=True, load_default=None)
    currency = Currency(allow_none=True, load_default=None)
    payment_method = _text()
    gateway = _text()


class PaymentFailedSchema(DataSchema):
    target = PaymentFailed
    payment_id = _optional_id()
    order_id = _optional_id()
    amount = _money(allow_none=True, load_default=None)
    currency = Currency(allow_none=True, load_default=None)
    failure_reason = fields.String(load_default="unknown")
    error_code = _text()


class PaymentRefundedSchema(DataSchema):
    target = PaymentRefunded
    payment_id = _optional_id()
    order_id = _optional_id()
    refund_amount = _money(required=True)
    refund_reason = _text()


class _InventorySchema(DataSchema):
    product_id = Id(required=True)
    sku = _text()
    # A producer with a single warehouse may omit the location: "" stands for it.
    location_id = Id(load_default="")


class InventoryLowStockSchema(_InventorySchema):
    target = InventoryLowStock
    current_quantity = _level()
    reorder_point = _level()


class InventoryOutOfStockSchema(_InventorySchema):
    target = InventoryOutOfStock
    last_sold_at = Timestamp(allow_none=True, load_default=None)


class InventoryRestockedSchema(_InventorySchema):
    target = InventoryRestocked
    quantity_added = _count()
    new_quantity = _level()


class InventoryAdjustedSchema(_InventorySchema):
    target = InventoryAdjusted
    previous_quantity = _level()
    new_quantity = _level()
    adjustment_reason = _text()


class MetadataSchema(Schema):
    class Meta:
        unknown = INCLUDE

    response_time_ms = fields.Float(allow_none=True, validate=validate.Range(min=0))


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event_id = Id(allow_none=True, load_default=None)
    event_type = fields.String(required=True, validate=validate.Length(min=1, max=ID_MAX_LENGTH))
    tenant_id = Id(required=True)
    user_id = _optional_id()
    timestamp = Timestamp(allow_none=True, load_default=None)
    data = fields.Dict(allow_none=True, load_default=None)
    metadata = fields.Nested(MetadataSchema, allow_none=True, load_default=None)


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class EventType:
    """A known event type: its name, the queue category it belongs to and its data schema."""

    name: str
    category: str
    schema: Schema
    #: ``schema.load`` behind the compiled fast path (analytics.compiled).
    load: Callable[[Any], Any]


REGISTRY: dict[str, EventType] = {}


def register(name: str, schema: type[Schema]) -> EventType:
    """Register an event type; a second registration of the same name is refused."""
    if name in REGISTRY:
        raise DuplicateRegistration(f"An event type named {name!r} is already registered.")
    category = name.split(".", 1)[0]
    instance = schema()
    REGISTRY[name] = EventType(name, category, instance, loader_for(instance))
    return REGISTRY[name]


for _name, _schema in (
    ("user.registered", UserRegisteredSchema),
    ("user.logged_in", UserLoggedInSchema),
    ("user.logged_out", UserLoggedOutSchema),
    ("user.profile_updated", UserProfileUpdatedSchema),
    ("order.created", OrderCreatedSchema),
    ("order.updated", OrderUpdatedSchema),
    ("order.cancelled", OrderCancelledSchema),
    ("order.fulfilled", OrderFulfilledSchema),
    ("payment.processed", PaymentProcessedSchema),
    ("payment.failed", PaymentFailedSchema),
    ("payment.refunded", PaymentRefundedSchema),
    ("inventory.low_stock", InventoryLowStockSchema),
    ("inventory.out_of_stock", InventoryOutOfStockSchema),
    ("inventory.restocked", InventoryRestockedSchema),
    ("inventory.adjusted", InventoryAdjustedSchema),
):
    register(_name, _schema)

#: The categories that have a queue of their own.
CATEGORIES = ("user", "order", "payment", "inventory")
_ENVELOPE = EnvelopeSchema()
_load_envelope = loader_for(_ENVELOPE)


# --------------------------------------------------------------------------- event


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event. ``data`` is the typed payload, or the raw dict for an unknown type."""

    event_id: str
    event_type: str
    tenant_id: str
    user_id: str | None
    timestamp: datetime
    data: Any
    channel: str
    received_at: datetime
    payload: dict[str, Any] = field(repr=False)
    response_time_ms: float | None = None
    event_id_derived: bool = False
    timestamp_derived: bool = False

    #: The event's day and hour buckets, computed once: handlers ask for them ~3 times an event.
    day: date = field(init=False, repr=False, compare=False)
    hour: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", self.timestamp.date())
        object.__setattr__(self, "hour", self.timestamp.replace(minute=0, second=0, microsecond=0))

    @property
    def known(self) -> bool:
        return self.event_type in REGISTRY


def derive_event_id(document: Mapping[str, Any]) -> str:
    """A deterministic id for an id-less payload, so the same payload twice counts once."""
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return "derived-" + hashlib.sha256(canonical).hexdigest()[:40]


#: What :func:`hash_pii` returns; a value already like this is not hashed again.
HASHED_PII = re.compile(r"hmac-sha256:[0-9a-f]{64}")


def hash_pii(value: Any, salt: str) -> str:
    """A salted hash that stands in for an e-mail address or IP address.

    A value that is already such a hash is returned as it is, so scrubbing twice
    changes nothing: a dead letter stored scrubbed and replayed later gets the
    same hashes (and the same derived event id) as if it had passed the first time.
    """
    text = str(value)
    if HASHED_PII.fullmatch(text):
        return text
    digest = hmac.new(salt.encode(), text.encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest


def scrub_pii(value: Any, salt: str, personal: bool = False) -> Any:
    """A copy of ``value`` with every e-mail and IP address replaced by its salted hash.

    Every string and number under a PII key is hashed, however nested (a list of
    addresses, an object of them).
    """
    if isinstance(value, dict):
        return {
            key: scrub_pii(item, salt, personal or key in PII_KEYS) for key, item in value.items()
        }
    if isinstance(value, list):
        return [scrub_pii(item, salt, personal) for item in value]
    if personal and isinstance(value, str | int):
        return hash_pii(value, salt)
    return value


#: A PII key's string or integer value in text that is not (valid) JSON; a string
#: cut off by the end of the text counts to the end.
_RAW_PII = re.compile(
    rb'("(?:' + b"|".join(re.escape(k.encode()) for k in sorted(PII_KEYS)) + rb')"\s*:\s*)'
    rb'(?:"((?:[^"\\]|\\.)*)(?:"|$)|(-?[0-9]+))',
    re.DOTALL,
)


def _hash_raw_value(match: re.Match[bytes], salt: str) -> bytes:
    key, quoted, number = match.groups()
    if quoted is None:
        value: Any = int(number)
    else:
        try:
            value = orjson.loads(b'"' + quoted + b'"')
        except orjson.JSONDecodeError:
            value = quoted.decode("utf-8", "replace")
    return key + b'"' + hash_pii(value, salt).encode() + b'"'


def scrub_raw(raw: bytes, salt: str) -> bytes:
    """The bytes to keep of a message that could not be ingested, with its PII hashed.

    JSON comes back re-serialised with every e-mail and IP value hashed as in the
    event store (the exact bytes when there is none to hash). Text that is not
    JSON (cut off, bad UTF-8) or too deep to walk keeps its bytes except the values
    of ``"email"`` and ``"ip_address"`` keys, hashed where they appear.
    """
    try:
        document = orjson.loads(raw)
        scrubbed = scrub_pii(document, salt)
        return raw if scrubbed == document else orjson.dumps(scrubbed)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return _RAW_PII.sub(lambda match: _hash_raw_value(match, salt), raw)


def _has_nul(value: Any) -> bool:
    """Whether a NUL is in any string (key or value) of a decoded document."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _scrub_typed(typed: Any, salt: str) -> Any:
    changes = {
        f.name: hash_pii(getattr(typed, f.name), salt)
        for f in dataclass_fields(typed)
        if f.name in PII_KEYS and getattr(typed, f.name) is not None
    }
    return replace(typed, **changes) if changes else typed


def decode(
    raw: bytes | str, max_bytes: int, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> dict[str, Any]:
    """Bytes to a JSON object, or InvalidEvent saying what is wrong with them.

    Size and nesting depth are checked on the bytes, before anything is parsed.
    """
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise InvalidEvent(f"payload is {size} bytes, over the limit of {max_bytes}")
    too_deep = depth_problem(raw, max_depth)
    if too_deep is not None:
        raise InvalidEvent(too_deep)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "null"
        raise InvalidEvent(f"event must be a JSON object, got {kind}")
    return document


def _summary(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        parts = [_summary(value, f"{prefix}{key}.") for key, value in messages.items()]
        return "; ".join(parts)
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return f"{prefix.rstrip('.')}: {' '.join(messages)}"
    if isinstance(messages, list):
        return "; ".join(_summary(m, prefix) for m in messages)
    return f"{prefix.rstrip('.')}: {messages}"


def parse(
    raw: bytes | str,
    *,
    channel: str,
    received_at: datetime,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    pii_salt: str | None = None,
) -> Event:
    """Validate one published message into an :class:`Event`, or raise InvalidEvent.

    Never raises anything else: an unexpected failure on strange input (a bug of
    ours, deep nesting) becomes an InvalidEvent too, so the message is kept as a
    dead letter to replay after a fix instead of sinking its whole batch.
    """
    try:
        return _parse(raw, channel, received_at, max_bytes, max_depth, pii_salt)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise InvalidEvent(f"could not validate ({type(exc).__name__}: {exc})") from exc


def _parse(
    raw: bytes | str,
    channel: str,
    received_at: datetime,
    max_bytes: int,
    max_depth: int,
    pii_salt: str | None,
) -> Event:
    document = decode(raw, max_bytes, max_depth)
    claimed = {
        key: value[:ID_MAX_LENGTH] if isinstance(value, str) else None
        for key, value in (
            ("tenant_id", document.get("tenant_id")),
            ("event_type", document.get("event_type")),
        )
    }
    try:
        envelope = _load_envelope(document)
    except ValidationError as exc:
        raise InvalidEvent(
            "invalid envelope: " + _summary(exc.messages), exc.messages, **claimed
        ) from None
    event_type: str = envelope["event_type"]
    data = envelope["data"] or {}
    spec = REGISTRY.get(event_type)
    typed: Any = data
    if spec is not None:
        try:
            typed = spec.load(data)
        except ValidationError as exc:
            messages = {"data": exc.messages}
            raise InvalidEvent(
                f"invalid {event_type} data: " + _summary(exc.messages, "data."),
                messages,
                **claimed,
            ) from None
    escaped_nul = "\\u0000" in raw if isinstance(raw, str) else b"\\u0000" in raw
    if escaped_nul and _has_nul(document):
        raise InvalidEvent(
            "text contains a NUL character (\\u0000), which the database cannot store",
            **claimed,
        )
    payload = document
    if pii_salt:
        # Nothing downstream sees an e-mail or IP address: not the stored payload,
        # not the typed data a handler gets, not the derived id.
        payload = scrub_pii(document, pii_salt)
        typed = _scrub_typed(typed, pii_salt) if spec is not None else scrub_pii(data, pii_salt)
    event_id = envelope["event_id"]
    if event_id is None:
        event_id = derive_event_id(payload)
    timestamp = envelope["timestamp"]
    metadata = envelope["metadata"] or {}
    return Event(
        event_id=event_id,
        event_type=event_type,
        tenant_id=envelope["tenant_id"],
        user_id=envelope["user_id"],
        timestamp=timestamp if timestamp is not None else received_at,
        data=typed,
        channel=channel,
        received_at=received_at,
        payload=payload,
        response_time_ms=metadata.get("response_time_ms"),
        event_id_derived=envelope["event_id"] is None,
        timestamp_derived=timestamp is None,
    )
