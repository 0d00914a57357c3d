"""The compiled fast path never disagrees with the marshmallow schemas it stands in front of.

Whatever the fast path accepts, marshmallow must accept with the same result; anything
else falls back to marshmallow, which stays the contract for errors.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime
from typing import Any

import orjson
import pytest
from marshmallow import Schema, ValidationError, fields

from analytics.events import _ENVELOPE, REGISTRY
from analytics.events.compiled import Fallback, compile_schema, loader_for
from loadgen import Simulator, seed_examples

WEIRD_VALUES: list[Any] = [
    None, "", " ", "x" * 200, True, False, 0, -1, 7, 1.5, -0.0, 10**30, 1e308, "12.5", "abc",
    "usd", "EURO", "2024-13-01T00:00:00Z", "2024-01-01T10:00:00+02:00", [], [1, "a"], {},
    {"country": 5}, {"product_id": "p"}, [{"product_id": "p", "quantity": "2"}],
]  # fmt: skip


def documents(count: int = 1500) -> list[dict[str, Any]]:
    stream = list(Simulator(tenants=2, seed=21, start=datetime(2024, 3, 4), days=2).events(count))
    return stream + seed_examples()


def schemas_for(document: dict[str, Any]) -> list[tuple[Schema, Any]]:
    pairs: list[tuple[Schema, Any]] = [(_ENVELOPE, document)]
    event_type = document.get("event_type")
    spec = REGISTRY.get(event_type) if isinstance(event_type, str) else None
    if spec is not None and isinstance(document.get("data"), dict):
        pairs.append((spec.schema, document["data"]))
    return pairs


def agree(schema: Schema, data: Any) -> bool:
    """True when the fast path handled ``data``; fails the test if it disagrees."""
    try:
        fast = compile_schema(schema)(data)
    except Fallback:
        return False
    try:
        slow = schema.load(data)
    except ValidationError as exc:
        pytest.fail(f"fast path accepted what marshmallow rejects ({exc.messages}): {data!r}")
    assert fast == slow, data
    return True


def test_valid_events_take_the_fast_path_and_load_identically():
    handled = total = 0
    for document in documents():
        # Round-trip through JSON so values have the types a worker sees.
        document = orjson.loads(orjson.dumps(document))
        for schema, data in schemas_for(document):
            total += 1
            handled += agree(schema, data)
    assert handled == total


def mutate(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    mutated = copy.deepcopy(document)
    target: Any = mutated
    path = []
    while isinstance(target, dict | list) and target and rng.random() < 0.9:
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        path.append((target, key))
        target = target[key]
    if not path:
        mutated[rng.choice(["data", "tenant_id", "extra"])] = rng.choice(WEIRD_VALUES)
        return mutated
    parent, key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = copy.deepcopy(rng.choice(WEIRD_VALUES))
    return mutated


def test_mutated_events_are_handled_identically_or_left_to_marshmallow():
    rng = random.Random(7)
    corpus = documents(600)
    fast = fell_back = 0
    for _ in range(20000):
        document = mutate(rng.choice(corpus), rng)
        for schema, data in schemas_for(document):
            if agree(schema, data):
                fast += 1
            else:
                fell_back += 1
    assert fast > 1000 and fell_back > 500  # both paths were exercised


def test_the_loader_gives_marshmallows_errors_for_invalid_input():
    load = REGISTRY["order.created"].load
    with pytest.raises(ValidationError) as info:
        load({"total_amount": "lots"})
    assert info.value.messages == {
        "order_id": ["Missing data for required field."],
        "total_amount": ["Not a valid number."],
    }


def test_a_field_type_the_compiler_does_not_know_is_refused_when_compiling():
    class WithEmail(Schema):
        email = fields.Email()

    with pytest.raises(TypeError, match="is not compiled"):
        compile_schema(WithEmail())
    with pytest.raises(TypeError, match="is not compiled"):
        loader_for(WithEmail())


def test_an_unsupported_marshmallow_fails_at_import_not_per_event():
    from analytics.events.compiled import _check_marshmallow

    _check_marshmallow("4.4.0")
    with pytest.raises(ImportError, match=r"marshmallow 3\.20\.1 is installed"):
        _check_marshmallow("3.20.1")


def test_a_hook_layout_the_loader_cannot_read_is_refused_at_compile_time():
    from collections import defaultdict

    from analytics.events import OrderCreatedSchema
    from analytics.events.compiled import compile_schema

    schema = OrderCreatedSchema()
    # marshmallow 3 keyed hooks by (tag, many): reading them as marshmallow 4's
    # finds none, and every post_load would be skipped.
    schema._hooks = defaultdict(list, {("post_load", False): ["make"]})  # type: ignore[dict-item, list-item]
    with pytest.raises(TypeError, match="unsupported marshmallow layout"):
        compile_schema(schema)
