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
from importlib.metadata import version
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from marshmallow.utils import missing

from analytics.events.fields import (
    ID_MAX_LENGTH,
    Currency,
    Id,
    Quantity,
    Timestamp,
    parse_timestamp,
)

Loader = Callable[[Any], Any]

#: The marshmallow major versions whose internals (``Schema._hooks``) this module
#: reads; pyproject.toml pins the same range. marshmallow 3 keeps hooks in another
#: layout, where reading them as below finds none and every event failed its
#: ``post_load``: so an unsupported version fails at import, not per event.
SUPPORTED_MARSHMALLOW = (4,)


def _check_marshmallow(installed: str) -> None:
    major = int(installed.split(".", 1)[0])
    if major not in SUPPORTED_MARSHMALLOW:
        raise ImportError(
            f"marshmallow {installed} is installed; the compiled loaders support "
            f"marshmallow {', '.join(map(str, SUPPORTED_MARSHMALLOW))}.x "
            "(pip install 'marshmallow>=4,<5')"
        )


_check_marshmallow(version("marshmallow"))


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
    if isinstance(field, Id):
        return lambda v: v if type(v) is str and 0 < len(v) <= ID_MAX_LENGTH else _fail()
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
    if type(field) is Quantity:

        def quantity(v: Any) -> int:
            if type(v) is int:
                return v
            if type(v) is float and v.is_integer():
                return int(v)
            raise Fallback

        return quantity
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


def _field_source(index: int, name: str, field: fields.Field, env: dict[str, Any]) -> list[str]:
    """The generated lines that load one field into ``values`` (``v`` holds its input)."""
    key = field.data_key or name
    lines = [f"v = get({key!r}, missing)", "if v is missing:"]
    default = field.load_default
    if field.required:
        lines.append("    raise Fallback")
    elif default is missing:
        lines.append("    pass")
    elif callable(default):
        env[f"default_{index}"] = default
        lines += [
            f"    v = default_{index}()",
            "    if v is not missing:",
            f"        values[{name!r}] = v",
        ]
    else:
        env[f"default_{index}"] = default
        lines.append(f"    values[{name!r}] = default_{index}")
    lines.append("elif v is None:")
    lines.append(f"    values[{name!r}] = None" if field.allow_none else "    raise Fallback")
    lines.append("else:")
    # The commonest conversions are written out; the others are calls.
    if isinstance(field, Id):
        lines.append(
            f"    if type(v) is not str or not 0 < len(v) <= {ID_MAX_LENGTH}: raise Fallback"
        )
    elif type(field) is fields.String:
        lines.append("    if type(v) is not str: raise Fallback")
    elif type(field) is fields.Integer and not field.strict:
        lines.append("    if type(v) is not int: raise Fallback")
    else:
        env[f"convert_{index}"] = _converter(field)
        lines.append(f"    v = convert_{index}(v)")
    for number, check in enumerate(_checks(field)):
        env[f"check_{index}_{number}"] = check
        lines.append(f"    if not check_{index}_{number}(v): raise Fallback")
    lines.append(f"    values[{name!r}] = v")
    return lines


def compile_schema(schema: Schema) -> Loader:
    """A fast loader equivalent to ``schema.load`` for the inputs it accepts.

    Supports the field types and validators this project's schemas use, unknown
    keys excluded or included, and ``post_load`` hooks; raises TypeError at
    compile time for anything else, so a schema change cannot silently diverge.
    The loader is generated Python source, one straight run of statements per
    field (as ``dataclasses`` writes ``__init__``): a function call per field
    cost ~40% of parsing an event (profile).
    """
    unknown = schema.unknown
    if unknown not in ("exclude", "include"):
        raise TypeError(f"unknown={unknown!r} is not compiled")
    # marshmallow 4 keeps hooks as {tag: [(method name, many, options)]}.
    hooks = []
    for attr, many, options in schema._hooks.get("post_load", []):
        if many or options.get("pass_original"):
            raise TypeError("post_load with many or pass_original is not compiled")
        hooks.append(getattr(schema, attr))
    declared = _declared_hooks(type(schema), "post_load")
    if len(hooks) != declared:
        # Another layout of ``_hooks`` (another marshmallow): skipping a hook
        # would silently change every event, so refuse to compile.
        raise TypeError(
            f"{type(schema).__name__} declares {declared} post_load hooks but "
            f"{len(hooks)} were found in Schema._hooks: unsupported marshmallow layout"
        )
    for tag in ("pre_load", "validates_schema", "validates"):
        if schema._hooks.get(tag):
            raise TypeError(f"{tag} hooks are not compiled")
    env: dict[str, Any] = {
        "Fallback": Fallback,
        "missing": missing,
        "ValidationError": ValidationError,
        "hooks": hooks,
        "known": frozenset(field.data_key or name for name, field in schema.load_fields.items()),
    }
    body = ["if type(data) is not dict:", "    raise Fallback", "get = data.get", "values = {}"]
    for index, (name, field) in enumerate(schema.load_fields.items()):
        body += _field_source(index, name, field, env)
    if unknown == "include":
        body += [
            "for key, value in data.items():",
            "    if key not in known:",
            "        values[key] = value",
        ]
    if hooks:
        body += [
            "for hook in hooks:",
            "    try:",
            "        values = hook(values)",
            "    except ValidationError:",
            "        raise Fallback from None",
        ]
    body.append("return values")
    source = "def load(data):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, f"<compiled {type(schema).__name__}>", "exec"), env)
    loader: Loader = env["load"]
    return loader


def _declared_hooks(cls: type, tag: str) -> int:
    """How many methods of ``cls`` (the most derived of each name) are ``tag`` hooks."""
    names = {name for klass in cls.__mro__ for name in vars(klass)}
    count = 0
    for name in names:
        hook_tags = getattr(getattr(cls, name, None), "__marshmallow_hook__", None)
        if hook_tags and any(tag in str(key) for key in hook_tags):
            count += 1
    return count


def loader_for(schema: Schema) -> Loader:
    """``schema.load`` with the compiled fast path in front of it."""
    fast = compile_schema(schema)

    def load(data: Any) -> Any:
        try:
            return fast(data)
        except Fallback:
            return schema.load(data)

    return load
