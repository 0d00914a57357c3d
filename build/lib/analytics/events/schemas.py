"""The payload of each event type, defined once: a frozen dataclass whose fields carry their
marshmallow field.

A definition is what a handler gets (``data: OrderCreated``, checked by mypy) and
the source of everything else: :func:`schema_for` gives the marshmallow schema
generated from it (``Schema.from_dict`` over the fields' ``metadata``, with a
``post_load`` that builds the dataclass), and the registry compiles its fast loader
from that schema (:mod:`analytics.events.compiled`). A field is written

    order_id: str = spec(Id(required=True))

where ``spec`` is :func:`dataclasses.field` with the marshmallow field in its
metadata (and no default: every dataclass field is filled by the schema). The
rare payload whose shape differs from its input (``user.logged_in`` flattens its
``location``; an order item's total defaults to quantity x unit price) names the
extra input fields and a ``prepare`` step in :func:`event_data`; a field that no
input key fills directly is :func:`derived`. Lists arrive as tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar, cast, dataclass_transform

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load

from analytics.events.fields import (
    Id,
    Timestamp,
    count,
    level,
    money,
    optional_currency,
    optional_id,
    optional_money,
    optional_text,
)
from analytics.events.fields import (
    quantity as units,
)

#: The metadata key under which a dataclass field keeps its marshmallow field.
SCHEMA_FIELD = "marshmallow"

Values = dict[str, Any]
_T = TypeVar("_T")


def spec(field: fields.Field) -> Any:
    """A payload field read from the input by the marshmallow ``field`` (of the same name)."""
    return dataclasses.field(metadata={SCHEMA_FIELD: field})


def derived() -> Any:
    """A payload field no input key fills directly: the type's ``prepare`` computes it."""
    return dataclasses.field()


class DataSchema(Schema):
    """Base of every generated ``data`` schema: unknown keys are kept in the raw store, not here."""

    target: ClassVar[type]
    #: Fields loaded as lists and held as tuples (the payloads are frozen).
    tuples: ClassVar[tuple[str, ...]] = ()
    #: ``prepare(values) -> values`` before the dataclass is built (none or one; in a
    #: tuple so that it is not bound as a method); may raise ValidationError.
    prepare: ClassVar[tuple[Callable[[Values], Values], ...]] = ()

    class Meta:
        unknown = EXCLUDE

    @post_load
    def make(self, values: Values, **kwargs: Any) -> Any:
        for step in self.prepare:
            values = step(values)
        for name in self.tuples:
            values[name] = tuple(values[name])
        return self.target(**values)


_SCHEMAS: dict[type, type[DataSchema]] = {}


@dataclass_transform(frozen_default=True, field_specifiers=(spec, derived))
def event_data(
    *,
    inputs: Mapping[str, fields.Field] | None = None,
    prepare: Callable[[Values], Values] | None = None,
) -> Callable[[type[_T]], type[_T]]:
    """Make a class a frozen payload dataclass and generate its schema.

    ``inputs``: input fields with no payload field of their own (read by ``prepare``).
    """

    def define(cls: type[_T]) -> type[_T]:
        data = dataclasses.dataclass(frozen=True, slots=True)(cls)
        declared = {
            f.name: f.metadata[SCHEMA_FIELD]
            for f in dataclasses.fields(data)  # type: ignore[arg-type]  # a dataclass now
            if SCHEMA_FIELD in f.metadata
        }
        declared.update(inputs or {})
        schema = cast(
            type[DataSchema], DataSchema.from_dict(declared, name=f"{cls.__name__}Schema")
        )
        schema.__module__ = __name__
        schema.target = data
        schema.tuples = tuple(n for n, f in declared.items() if isinstance(f, fields.List))
        schema.prepare = (prepare,) if prepare is not None else ()
        _SCHEMAS[data] = schema
        return data

    return define


def schema_for(data: type) -> type[DataSchema]:
    """The marshmallow schema generated from a payload dataclass."""
    return _SCHEMAS[data]


# ---------------------------------------------------------------------------- user


@event_data()
class UserRegistered:
    user_id: str | None = spec(optional_id())
    email: str | None = spec(optional_text())
    tenant_slug: str | None = spec(optional_text())
    registration_method: str = spec(fields.String(load_default="email"))
    referral_source: str = spec(fields.String(load_default="organic"))


def _flatten_location(values: Values) -> Values:
    location = values.pop("location", None) or {}
    country, city = location.get("country"), location.get("city")
    for key, value in (("country", country), ("city", city)):
        if value is not None and not isinstance(value, str):
            raise ValidationError({"location": {key: ["Not a valid string."]}})
    values["country"], values["city"] = country or None, city or None
    return values


@event_data(
    inputs={"location": fields.Dict(allow_none=True, load_default=None)},
    prepare=_flatten_location,
)
class UserLoggedIn:
    user_id: str | None = spec(optional_id())
    login_method: str | None = spec(optional_text())
    device_type: str | None = spec(optional_text())
    #: From ``location.country`` and ``location.city``.
    country: str | None = derived()
    city: str | None = derived()


@event_data()
class UserLoggedOut:
    user_id: str | None = spec(optional_id())
    session_duration_seconds: Decimal | None = spec(optional_money())


@event_data()
class UserProfileUpdated:
    user_id: str | None = spec(optional_id())
    fields_updated: tuple[str, ...] = spec(fields.List(fields.String(), load_default=list))


# --------------------------------------------------------------------------- order


def _total_price(values: Values) -> Values:
    if values["total_price"] is None:  # default: quantity x unit price
        values["total_price"] = values["unit_price"] * values["quantity"]
    return values


@event_data(prepare=_total_price)
class OrderItem:
    product_id: str = spec(Id(required=True))
    sku: str | None = spec(optional_text())
    name: str | None = spec(optional_text())
    quantity: int = spec(units(load_default=1))
    unit_price: Decimal = spec(money(load_default=Decimal(0)))
    total_price: Decimal = spec(optional_money())


@event_data()
class OrderCreated:
    order_id: str = spec(Id(required=True))
    order_number: str | None = spec(optional_text())
    customer_id: str | None = spec(optional_id())
    location_id: str | None = spec(optional_id())
    items_count: int | None = spec(count())
    subtotal: Decimal | None = spec(optional_money())
    tax_amount: Decimal | None = spec(optional_money())
    shipping_amount: Decimal | None = spec(optional_money())
    total_amount: Decimal = spec(money(required=True))
    currency: str | None = spec(optional_currency())
    items: tuple[OrderItem, ...] = spec(
        fields.List(fields.Nested(schema_for(OrderItem)), load_default=list)
    )


@event_data()
class OrderUpdated:
    order_id: str = spec(Id(required=True))
    order_number: str | None = spec(optional_text())
    status: str | None = spec(optional_text())
    previous_status: str | None = spec(optional_text())


@event_data()
class OrderCancelled:
    order_id: str = spec(Id(required=True))
    order_number: str | None = spec(optional_text())
    cancellation_reason: str | None = spec(optional_text())
    refund_amount: Decimal | None = spec(optional_money())


@event_data()
class OrderFulfilled:
    order_id: str = spec(Id(required=True))
    order_number: str | None = spec(optional_text())
    fulfillment_method: str | None = spec(optional_text())
    carrier: str | None = spec(optional_text())


# ------------------------------------------------------------------------- payment


@event_data()
class PaymentProcessed:
    payment_id: str | None = spec(optional_id())
    order_id: str | None = spec(optional_id())
    amount: Decimal | None = spec(optional_money())
    currency: str | None = spec(optional_currency())
    payment_method: str | None = spec(optional_text())
    gateway: str | None = spec(optional_text())


@event_data()
class PaymentFailed:
    payment_id: str | None = spec(optional_id())
    order_id: str | None = spec(optional_id())
    amount: Decimal | None = spec(optional_money())
    currency: str | None = spec(optional_currency())
    failure_reason: str = spec(fields.String(load_default="unknown"))
    error_code: str | None = spec(optional_text())


@event_data()
class PaymentRefunded:
    payment_id: str | None = spec(optional_id())
    order_id: str | None = spec(optional_id())
    refund_amount: Decimal = spec(money(required=True))
    refund_reason: str | None = spec(optional_text())


# ----------------------------------------------------------------------- inventory


@event_data()
class _Inventory:
    """The fields every inventory event starts with."""

    product_id: str = spec(Id(required=True))
    sku: str | None = spec(optional_text())
    # A producer with a single warehouse may omit the location: "" stands for it.
    location_id: str = spec(Id(load_default=""))


@event_data()
class InventoryLowStock(_Inventory):
    current_quantity: int | None = spec(level())
    reorder_point: int | None = spec(level())


@event_data()
class InventoryOutOfStock(_Inventory):
    last_sold_at: datetime | None = spec(Timestamp(allow_none=True, load_default=None))


@event_data()
class InventoryRestocked(_Inventory):
    quantity_added: int | None = spec(count())
    new_quantity: int | None = spec(level())


@event_data()
class InventoryAdjusted(_Inventory):
    previous_quantity: int | None = spec(level())
    new_quantity: int | None = spec(level())
    adjustment_reason: str | None = spec(optional_text())


#: Every event type this pipeline knows, and its payload.
EVENT_TYPES: dict[str, type] = {
    "user.registered": UserRegistered,
    "user.logged_in": UserLoggedIn,
    "user.logged_out": UserLoggedOut,
    "user.profile_updated": UserProfileUpdated,
    "order.created": OrderCreated,
    "order.updated": OrderUpdated,
    "order.cancelled": OrderCancelled,
    "order.fulfilled": OrderFulfilled,
    "payment.processed": PaymentProcessed,
    "payment.failed": PaymentFailed,
    "payment.refunded": PaymentRefunded,
    "inventory.low_stock": InventoryLowStock,
    "inventory.out_of_stock": InventoryOutOfStock,
    "inventory.restocked": InventoryRestocked,
    "inventory.adjusted": InventoryAdjusted,
}

# The generated schemas under the names they had when they were written by hand.
UserRegisteredSchema = schema_for(UserRegistered)
UserLoggedInSchema = schema_for(UserLoggedIn)
UserLoggedOutSchema = schema_for(UserLoggedOut)
UserProfileUpdatedSchema = schema_for(UserProfileUpdated)
OrderItemSchema = schema_for(OrderItem)
OrderCreatedSchema = schema_for(OrderCreated)
OrderUpdatedSchema = schema_for(OrderUpdated)
OrderCancelledSchema = schema_for(OrderCancelled)
OrderFulfilledSchema = schema_for(OrderFulfilled)
PaymentProcessedSchema = schema_for(PaymentProcessed)
PaymentFailedSchema = schema_for(PaymentFailed)
PaymentRefundedSchema = schema_for(PaymentRefunded)
InventoryLowStockSchema = schema_for(InventoryLowStock)
InventoryOutOfStockSchema = schema_for(InventoryOutOfStock)
InventoryRestockedSchema = schema_for(InventoryRestocked)
InventoryAdjustedSchema = schema_for(InventoryAdjusted)
