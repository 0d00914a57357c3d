"""The batches' JSON (tasks/serializer.py): orjson writes and reads it, and whatever it is
given, it reads what kombu's reader reads and writes what kombu's reader reads back, so
that bridges and workers of either version mix."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu.serialization import prepare_accept_content, registry
from kombu.utils import json as kombu_json

import tasks.app  # noqa: F401  (registers the serializer, as every process does)
from tasks import serializer

#: Any JSON value: integers past 64 bits, every float (NaN and infinities too), any
#: text (lone surrogates too) and keys kombu would take for a marker.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["__type__", "__value__", "datetime"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["__type__", "__value__"]), children, max_size=4
        )
    ),
    max_leaves=20,
)


def outcome(read, data):
    """What ``read`` gives for ``data``: its value (NaN equal to NaN, through the repr), or
    its error's type (kombu refuses a marker of a type it does not know)."""
    try:
        return repr(read(data))
    except (ValueError, TypeError) as error:  # TypeError: a marker of an unhashable type
        return type(error)


@given(values)
def test_what_kombu_wrote_is_read_as_kombu_reads_it(value):
    text = kombu_json.dumps(value)
    expected = outcome(kombu_json.loads, text)
    for data in (text, text.encode(), bytearray(text.encode()), memoryview(text.encode())):
        assert outcome(serializer.loads, data) == expected


@given(values)
def test_what_the_batch_writer_wrote_kombu_reads_back(value):
    if any(word in repr(value) for word in ("nan", "inf")):
        return  # orjson writes NaN and infinities as null; see the test below
    written = serializer.dumps(value)
    expected = outcome(kombu_json.loads, kombu_json.dumps(value))
    assert outcome(kombu_json.loads, written) == expected
    assert outcome(serializer.loads, written) == expected


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30, -(10**30)])
def test_an_integer_past_64_bits_is_read_exactly(number):
    """orjson would read it as a float."""
    assert serializer.loads(f'[1.5, {{"n": [{number}]}}]') == [1.5, {"n": [number]}]
    assert serializer.loads(str(number)) == number


def test_a_batch_is_written_by_orjson_and_reads_back_the_same():
    items = [["events:order:created", '{"event_type": "order.created", "n": 1}', 1733570000.25]]
    body = [[items], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    written = serializer.dumps(body)
    assert isinstance(written, bytes) and b", " not in written.replace(b'", \\"n', b"")
    assert kombu_json.loads(written) == serializer.loads(written) == body


@dataclasses.dataclass
class Point:
    x: int


class Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        [b"raw bytes"],
        [b"\xff\xfe not utf-8"],
        [datetime(2024, 5, 1, 10, 15, tzinfo=UTC)],
        [Decimal("1.25")],
        [Name("a str subclass")],
        [2**70],
    ],
    ids=["bytes", "binary", "datetime", "decimal", "str-subclass", "big-int"],
)
def test_what_orjson_would_write_differently_kombu_writes(value):
    """A batch of texts a test or a replay handed in as bytes goes as kombu's markers, and
    every type orjson writes its own way (a date as a plain string) as kombu writes it."""
    written = serializer.dumps(value)
    assert json.loads(written) == json.loads(kombu_json.dumps(value))
    assert serializer.loads(written) == kombu_json.loads(kombu_json.dumps(value))


def test_what_the_batch_writer_writes_its_own_way():
    """Documented: a batch carries neither (its floats are receipt times)."""
    assert serializer.dumps([float("nan")]) == b"[null]"
    assert serializer.dumps([uuid.UUID(int=7)]) == b'["00000000-0000-0000-0000-000000000007"]'


@pytest.mark.parametrize("text", ["{", "[1,]", "", "nul"])
def test_bad_json_fails_as_with_kombu(text):
    with pytest.raises(ValueError) as kombu_error:
        kombu_json.loads(text)
    with pytest.raises(type(kombu_error.value)):
        serializer.loads(text)


def test_the_registry_reads_json_with_it_and_a_json_worker_accepts_batches():
    assert registry._decoders["application/json"] is serializer.loads
    content_type, encoding, payload = registry.dumps([["x"]], serializer.BATCH_SERIALIZER)
    assert (content_type, encoding, payload) == ("application/json", "utf-8", b'[["x"]]')
    # An older worker's accept_content=["json"] takes the batches' content type.
    assert content_type in prepare_accept_content(["json"])
    assert registry.type_to_name[content_type] == "json"
    # Other tasks keep kombu's writer.
    assert registry.dumps({"d": uuid.UUID(int=1)}, "json")[2] == kombu_json.dumps(
        {"d": uuid.UUID(int=1)}
    )
