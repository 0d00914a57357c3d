"""Compiled loaders: a fast path through a marshmallow schema for the common, valid event.

A straightforward marshmallow ``load`` of an order.created costs ~100 µs, half a
2-core machine's budget for an event at 10,000 events/s. :func:`compile_schema`
reads a schema's fields once and returns a plain function that does the same
conversions for the inputs it recognises (strings, ints and floats where the
schema expects them, the validators these schemas use) and gives up on anything
else by raising :class:`Fallback`. The caller then runs the real schema, which
stays the contract: it produces the error messages, and any input the fast path
does not handle gets marshmallow's answer. ``tests/analytics/test_compiled.py``
checks that both agree on valid events and on thousands of mutated ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from marshmallow.utils import missing

Loader = Callable[[Any], Any]


class Fallback(Exception):
    """The fast path does not handle this input: run the marshmallow schema instead."""


def _fail() -> Any:
    raise Fallback


def _checks(field: fields.Field) -> list[Callable[[Any], bool]]:
    checks: list[Callable[[Any], bool]] = []
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if not (validator.min_inclusive and validator.max_inclusive):
                raise TypeError("exclusive ranges are not compiled")
            checks.append(_within(validator.min, validator.max, lambda v: v))
        elif isinstance(validator, validate.Length) and validator.equal is None:
            checks.append(_within(validator.min, validator.max, len))
        else:
            raise TypeError(f"validator {validator!r} is not compiled")
    return checks


def _within(low: Any, high: Any, measure: Callable[[Any], Any]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        size = measure(value)
        return (low is None or size >= low) and (high is None or size <= high)

    return check


def _converter(field: fields.Field) -> Loader:
    """A function from a present, non-null value to the loaded value, or Fallback."""
    from analytics.events import Currency, Id, Timestamp, parse_timestamp

    if isinstance(field, Id):
        return lambda v: v if type(v) is str and 0 < len(v) <= 128 else _fail()
    if isinstance(field, Currency):
        return lambda v: v.upper() if type(v) is str and len(v) == 3 and v.isalpha() else _fail()
    if isinstance(field, Timestamp):

        def timestamp(v: Any) -> Any:
            if type(v) is not str:
                raise Fallback
            try:
                return parse_timestamp(v)
            except ValueError:
                raise Fallback from None

        return timestamp
    if type(field) is fields.String:
        return lambda v: v if type(v) is str else _fail()
    if type(field) is fields.Decimal:
        if field.places is not None or field.allow_nan or field.as_string:
            raise TypeError("only plain Decimal fields are compiled")

        def decimal(v: Any) -> Decimal:
            if type(v) is int:
                return Decimal(v)
            if type(v) is float and math.isfinite(v):
                return Decimal(str(v))
            raise Fallback

        return decimal
    if type(field) is fields.Integer:
        if field.strict:
            raise TypeError("strict Integer is not compiled")
        return lambda v: v if type(v) is int else _fail()
    if type(field) is fields.Float:
        if field.allow_nan or field.as_string:
            raise TypeError("only plain Float fields are compiled")
        return lambda v: float(v) if type(v) in (int, float) and math.isfinite(v) else _fail()
    if type(field) is fields.Dict and field.key_field is None and field.value_field is None:
        return lambda v: dict(v) if type(v) is dict else _fail()
    if type(field) is fields.List:
        inner = field.inner
        if isinstance(inner, fields.Nested) and not inner.many:
            item = compile_schema(inner.schema)
        else:
            item = _converter(inner)
            if inner.validators:
                raise TypeError("validators inside a List are not compiled")

        def items(v: Any) -> list[Any]:
            if type(v) is not list:
                raise Fallback
            return [item(element) for element in v]

        return items
    if type(field) is fields.Nested and not field.many:
        return compile_schema(field.schema)
    raise TypeError(f"field {field!r} is not compiled")


def _field_loader(name: str, field: fields.Field) -> Callable[[dict[str, Any]], Any]:
    convert = _converter(field)
    checks = _checks(field)
    required, allow_none, default = field.required, field.allow_none, field.load_default

    def load(data: dict[str, Any]) -> Any:
        value = data.get(name, missing)
        if value is missing:
            if required:
                raise Fallback
            return default() if callable(default) else default
        if value is None:
            if allow_none:
                return None
            raise Fallback
        result = convert(value)
        for check in checks:
            if not check(result):
                raise Fallback
        return result

    return load


def compile_schema(schema: Schema) -> Loader:
    """A fast loader equivalent to ``schema.load`` for the inputs it accepts.

    Supports the field types and validators this project's schemas use, unknown
    keys excluded or included, and ``post_load`` hooks; raises TypeError at
    compile time for anything else, so a schema change cannot silently diverge.
    """
    unknown = schema.unknown
    if unknown not in ("exclude", "include"):
        raise TypeError(f"unknown={unknown!r} is not compiled")
    loaders = [
        (name, _field_loader(field.data_key or name, field))
        for name, field in schema.load_fields.items()
    ]
    known = {field.data_key or name for name, field in schema.load_fields.items()}
    # marshmallow 4 keeps hooks as {tag: [(method name, many, options)]}.
    hooks = []
    for attr, many, options in schema._hooks.get("post_load", []):
        if many or options.get("pass_original"):
            raise TypeError("post_load with many or pass_original is not compiled")
        hooks.append(getattr(schema, attr))
    for tag in ("pre_load", "validates_schema", "validates"):
        if schema._hooks.get(tag):
            raise TypeError(f"{tag} hooks are not compiled")
    include = unknown == "include"

    def load(data: Any) -> Any:
        if type(data) is not dict:
            raise Fallback
        values = {name: loader(data) for name, loader in loaders}
        values = {k: v for k, v in values.items() if v is not missing}
        if include:
            for key, value in data.items():
                if key not in known:
                    values[key] = value
        for hook in hooks:
            try:
                values = hook(values)
            except ValidationError:
                raise Fallback from None
        return values

    return load


def loader_for(schema: Schema) -> Loader:
    """``schema.load`` with the compiled fast path in front of it."""
    fast = compile_schema(schema)

    def load(data: Any) -> Any:
        try:
            return fast(data)
        except Fallback:
            return schema.load(data)

    return load
