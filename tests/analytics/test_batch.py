"""The bridge->worker batch items: named, encoded as version 1's positional lists, packed
into one version 2 item, versioned."""

import base64

import orjson
import pytest
import zstandard

from analytics.batch import EventItem, RejectedItem, UnsupportedItem, pack, unpack


def test_an_event_item_travels_as_todays_positional_list():
    item = EventItem("events:order:created", '{"a": 1}', 1.5)
    assert item.encode() == ["events:order:created", '{"a": 1}', 1.5]
    assert EventItem.decode(item.encode()) == item


def test_a_rejected_item_carries_its_bytes_in_base64_and_the_whole_size_and_hash():
    item = RejectedItem("events:a:b", b"\xff{", 2.0, "invalid JSON", 9, "ab" * 32)
    wire = item.encode()
    assert wire == [
        "events:a:b",
        base64.b64encode(b"\xff{").decode(),
        2.0,
        "invalid JSON",
        9,
        "ab" * 32,
    ]
    assert RejectedItem.decode(wire) == item
    # The size and hash may be left off (an older bridge).
    assert RejectedItem.decode(wire[:4]) == RejectedItem(
        "events:a:b", b"\xff{", 2.0, "invalid JSON"
    )


@pytest.mark.parametrize("item", [{"v": 3, "channel": "x"}, ["only", "two"], "text"])
def test_an_item_of_an_unknown_version_or_shape_is_refused(item):
    with pytest.raises(UnsupportedItem):
        EventItem.decode(item)


ITEMS = [
    EventItem("events:order:created", '{"event_type": "order.created", "n": 1}', 1.5).encode(),
    RejectedItem("events:a:b", b"\xff{", 2.0, "invalid JSON").encode(),
    ["events:user:registered", "caf\u00e9 \u2603", 3.25],
]


def test_a_batch_is_packed_into_one_item_that_unpacks_to_its_items():
    (packed,) = pack(ITEMS)
    assert packed["v"] == 2 and set(packed) == {"v", "zstd"}
    frame = base64.b64decode(packed["zstd"])
    assert orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(frame)) == ITEMS
    assert unpack([packed]) == ITEMS
    assert unpack(orjson.loads(orjson.dumps([packed]))) == ITEMS  # as it travels


def test_version_1_batches_are_read_as_they_are():
    assert unpack(ITEMS) is ITEMS
    assert unpack([ITEMS[0]]) == [ITEMS[0]]
    assert unpack([]) == []


def test_a_batch_holding_bytes_is_not_packed():
    items = [["events:order:created", b'{"event_type": "order.created"}', 1.0]]
    assert pack(items) is items


def test_an_older_worker_refuses_a_packed_batch_whole():
    # A version 1 worker decodes each item by itself: the packed one is of a version it
    # does not read, so the batch fails before anything is written and is sent again.
    (packed,) = pack(ITEMS)
    with pytest.raises(UnsupportedItem, match="version 2"):
        EventItem.decode(packed)


@pytest.mark.parametrize(
    "packed",
    [
        {"v": 2},
        {"v": 2, "zstd": "not base64!"},
        {"v": 2, "zstd": base64.b64encode(b"not a zstd frame").decode()},
        {"v": 2, "zstd": base64.b64encode(zstandard.ZstdCompressor().compress(b"{")).decode()},
        {"v": 2, "zstd": base64.b64encode(zstandard.ZstdCompressor().compress(b"{}")).decode()},
    ],
)
def test_a_packed_batch_that_does_not_unpack_is_refused(packed):
    with pytest.raises(UnsupportedItem, match="packed batch"):
        unpack([packed])
