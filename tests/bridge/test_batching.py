"""The batcher's hold: a quiet stream waits up to the budget to fill a batch, a busy one
goes at the flush time, a full one at once (no Redis: the batcher is driven directly)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import orjson
import pytest

from analytics.config import Settings
from bridge.batching import Batcher
from bridge.holding import Holding
from tests.bridge.conftest import Recorder

FLUSH, BUDGET, FILL = 0.05, 0.15, 10


def make_batcher(**overrides: Any) -> tuple[Batcher, Recorder]:
    values: dict[str, Any] = {
        "event_channel_pattern": "events:*",
        "bridge_flush_ms": FLUSH * 1000,
        "bridge_hold_budget_ms": BUDGET * 1000,
        "bridge_fill_events": FILL,
        "bridge_batch_size": 50,
        "bridge_max_hold_ms": 0,
    }
    settings = dataclasses.replace(Settings.from_env({}), **{**values, **overrides})
    recorder = Recorder()
    held = Holding(settings, threading.Event())
    batcher = Batcher(
        settings,
        recorder,
        held,
        durable=False,
        stopping=threading.Event(),
        acknowledge=lambda _: None,
        release=lambda _: None,
    )
    return batcher, recorder


def messages(count: int, event_type: str = "order.created") -> list[Any]:
    channel = f"events:{event_type.replace('.', ':')}".encode()
    now = time.time()
    return [
        (channel, orjson.dumps({"event_type": event_type, "event_id": f"e{i}"}), now, None)
        for i in range(count)
    ]


def waits(batcher: Batcher) -> float:
    due = batcher.next_due()
    assert due is not None
    return due - time.monotonic()


def keep_streaming(batcher: Batcher) -> None:
    """Events have been arriving: the next group is not one after a quiet spell."""
    batcher._last_received = time.time()


def test_a_partial_batch_of_a_quiet_stream_waits_up_to_the_budget():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group(messages(3))
    assert FLUSH < waits(batcher) <= BUDGET
    batcher.flush(force=False)
    assert recorder.batches == []


def test_a_batch_that_holds_the_fill_events_goes_at_the_flush_time():
    batcher, _ = make_batcher()
    keep_streaming(batcher)
    batcher.group(messages(FILL))
    assert waits(batcher) <= FLUSH


def test_a_due_batch_is_sent_whole_and_a_full_one_at_once():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group(messages(55))
    batcher.flush(force=False)
    assert [len(items) for _, _, items, _ in recorder.batches] == [50]
    time.sleep(BUDGET)
    batcher.flush(force=False)
    assert [len(items) for _, _, items, _ in recorder.batches] == [50, 5]


def test_an_event_after_a_quiet_spell_goes_at_once():
    batcher, recorder = make_batcher()
    batcher.group(messages(1))
    assert waits(batcher) <= 0
    batcher.flush(force=False)
    assert len(recorder.batches) == 1


@pytest.mark.parametrize("budget_ms", [0.0, 20.0])
def test_the_budget_is_never_below_the_flush_time(budget_ms):
    batcher, _ = make_batcher(bridge_hold_budget_ms=budget_ms)
    keep_streaming(batcher)
    batcher.group(messages(1))
    assert FLUSH - 0.01 < waits(batcher) <= FLUSH
