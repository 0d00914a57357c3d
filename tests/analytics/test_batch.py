"""The bridge->worker batch items: named, encoded as version 1's positional lists, versioned."""

import base64

import pytest

from analytics.batch import EventItem, RejectedItem, UnsupportedItem


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


@pytest.mark.parametrize("item", [{"v": 2, "channel": "x"}, ["only", "two"], "text"])
def test_an_item_of_an_unknown_version_or_shape_is_refused(item):
    with pytest.raises(UnsupportedItem):
        EventItem.decode(item)
