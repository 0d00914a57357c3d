"""The nesting-depth limit: measured on the bytes, before anything is parsed."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.errors import InvalidEvent
from analytics.events import parse
from analytics.limits import depth_problem, nesting_depth
from bridge.relay import route

LIMIT = 32
MESSAGE = "JSON nested deeper than the limit of 32 levels"


def nested(depth: int) -> bytes:
    """An order.created envelope whose ``data`` has a value ``depth`` levels deep in all."""
    inner = "[" * (depth - 2) + "1" + "]" * (depth - 2)
    return (
        '{"event_type": "order.created", "tenant_id": "t", '
        f'"data": {{"order_id": "o", "total_amount": 1, "x": {inner}}}}}'
    ).encode()


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        (b"1", 0),
        (b'"text"', 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        # Brackets inside strings are text, not structure ...
        (b'{"a": "[[[[{{{{"}', 1),
        # ... also after an escaped quote, which does not end the string ...
        (b'{"a": "say \\"[[[\\" twice"}', 1),
        # ... while an escaped backslash does not escape the quote after it.
        (b'{"a": "\\\\", "b": [[1]]}', 3),
        (b'["\\u005b", "]]]]"]', 1),
        ('{"caf\u00e9": ["\u2603["]}'.encode(), 2),
        # Unbalanced input: the deepest run of openers over closers (a parser stops at
        # the first closer without an opener, so what follows it is never reached).
        (b"[[[", 3),
        (b"[]][[", 1),
    ],
)
def test_depth_counts_brackets_outside_strings(document: bytes, depth: int) -> None:
    assert nesting_depth(document) == depth
    assert nesting_depth(document.decode()) == depth


json_values = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet='[]{}"\\ab\u00e9\n', max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(json_values)
def test_depth_of_any_json_document_is_the_depth_of_its_value(value: Any) -> None:
    assert nesting_depth(orjson.dumps(value)) == depth_of(value)


def test_exactly_the_limit_passes_and_one_more_is_refused() -> None:
    assert nesting_depth(nested(LIMIT)) == LIMIT
    assert depth_problem(nested(LIMIT), LIMIT) is None
    assert depth_problem(nested(LIMIT + 1), LIMIT) == MESSAGE
    # Many openers side by side are not depth: the cheap pre-check is not the verdict.
    wide = b"[" + b",".join([b"[1]"] * 1000) + b"]"
    assert depth_problem(wide, LIMIT) is None


def test_a_megabyte_of_openers_is_refused_without_scanning_it_all() -> None:
    bomb = b"[" * (1 << 20)
    started = time.perf_counter()
    assert depth_problem(bomb, LIMIT) == MESSAGE
    elapsed = time.perf_counter() - started
    print(f"1 MiB of '[' refused in {elapsed * 1000:.1f} ms")
    assert elapsed < 0.5


def test_the_worker_dead_letters_an_over_deep_event_with_the_reason() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(
            nested(LIMIT + 1),
            channel="events:order:created",
            received_at=datetime(2024, 1, 1),
            max_bytes=1 << 20,
            max_depth=LIMIT,
        )
    assert caught.value.summary == MESSAGE
    # The same document is fine under a higher limit.
    event = parse(
        nested(LIMIT + 1).decode(),
        channel="events:order:created",
        received_at=datetime(2024, 1, 1),
        max_bytes=1 << 20,
        max_depth=LIMIT + 1,
    )
    assert event.event_type == "order.created"


def test_the_bridge_rejects_an_over_deep_event_before_parsing_it() -> None:
    with pytest.raises(InvalidEvent, match=MESSAGE):
        route("events:order:created", nested(LIMIT + 1), "events:", 1 << 20, LIMIT)
    assert route("events:order:created", nested(LIMIT), "events:", 1 << 20, LIMIT)[0] == (
        "order.created"
    )
