"""The one event type <-> channel mapping: channel_for and category_of agree."""

import pytest

from analytics.events import REGISTRY, category_of, channel_for


@pytest.mark.parametrize("prefix", ["events", "events:", "staging:events", ""])
def test_the_category_read_back_from_a_channel_is_the_event_types(prefix):
    for event_type, spec in REGISTRY.items():
        assert category_of(channel_for(event_type, prefix), prefix) == spec.category


def test_a_channel_without_a_category_after_the_prefix_names_none():
    assert category_of("events::created", "events:") == ""


@pytest.mark.parametrize("event_type", ["foo", ".x", "order."])
def test_a_type_without_category_and_action_has_no_channel(event_type):
    with pytest.raises(ValueError, match=r"category\.action"):
        channel_for(event_type)
