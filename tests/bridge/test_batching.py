"""The batcher's hold: a quiet stream waits up to the budget to fill a batch, a busy one
goes at the flush time, a full one at once; under-filled batches go together as one
mixed message, of one category or of several (no Redis: the batcher is driven directly)."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

import orjson
import pytest

from analytics.config import Settings
from bridge.batching import ArrivalRate, Batcher
from bridge.holding import MESSAGE_OVERHEAD, Holding
from bridge.streams import Receipt
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


def test_an_event_after_a_gap_goes_with_the_batch_already_pending():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group(messages(3))
    # The next read came late: the reader waited for the pending batch's due time.
    batcher._last_received -= 2 * FLUSH
    batcher.group(messages(1, "order.updated"))
    assert FLUSH < waits(batcher) <= BUDGET
    batcher.flush(force=False)
    assert recorder.batches == []


def test_a_batch_is_held_from_when_its_first_event_was_read():
    batcher, _ = make_batcher()
    keep_streaming(batcher)
    read_earlier = [(c, d, received - BUDGET / 2, r) for c, d, received, r in messages(1)]
    batcher.group(read_earlier)
    assert BUDGET / 2 - 0.02 < waits(batcher) <= BUDGET / 2


@pytest.mark.parametrize("budget_ms", [0.0, 20.0])
def test_the_budget_is_never_below_the_flush_time(budget_ms):
    batcher, _ = make_batcher(bridge_hold_budget_ms=budget_ms)
    keep_streaming(batcher)
    batcher.group(messages(1))
    assert FLUSH - 0.01 < waits(batcher) <= FLUSH


def test_the_arrival_rate_follows_a_steady_stream_and_forgets_a_past_one():
    rate = ArrivalRate(window=1.0, step=0.05)
    start = rate._at
    for tick in range(1, 501):  # 10 events every 10 ms for 5 s: 1,000 a second
        value = rate.add(10, start + tick * 0.01)
    assert value == pytest.approx(1000, rel=0.02)
    # Silence for ten windows, then one event: the stream is forgotten (what is left is
    # the last events counted, spread over the silence).
    assert rate.add(1, start + 15.0) < 10


@pytest.mark.parametrize("per_second", [200, 500, 2000])
def test_a_busier_stream_holds_its_partial_batches_less(per_second):
    """The hold is the budget less each event's share of its batch's task time:
    budget / (1 + per_event x rate), and never below the flush time."""
    per_event_us = 250.0
    batcher, _ = make_batcher(bridge_hold_event_us=per_event_us)
    keep_streaming(batcher)
    start = time.monotonic() - 5.0
    batcher.rate._at = start
    for tick in range(1, 501):  # the last 5 s at ``per_second``
        batcher.rate.add(per_second // 100, start + tick * 0.01)
    batcher.group(messages(1))
    expected = max(FLUSH, BUDGET / (1 + per_event_us / 1e6 * per_second))
    assert batcher.hold == pytest.approx(expected, rel=0.01)
    assert expected - 0.02 < waits(batcher) <= expected + 0.001


def test_with_no_share_per_event_the_hold_is_the_budget_whatever_the_rate():
    batcher, _ = make_batcher(bridge_hold_event_us=0)
    keep_streaming(batcher)
    start = time.monotonic() - 5.0
    batcher.rate._at = start
    for tick in range(1, 501):
        batcher.rate.add(20, start + tick * 0.01)
    batcher.group(messages(1))
    assert batcher.hold == BUDGET
    assert BUDGET - 0.02 < waits(batcher) <= BUDGET


# ------------------------------------------------------------------ mixed batches


def sent(recorder: Recorder) -> list[tuple[str, str, int, dict[str, int] | None]]:
    """Each message sent: task, queue, events, and the events of each type when mixed."""
    return [
        (task, queue, len(items), kinds)
        for (task, queue, items, _), kinds in zip(recorder.batches, recorder.kinds, strict=True)
    ]


def sent_when_due(batcher: Batcher, recorder: Recorder, batch: list[Any]) -> list[Any]:
    """What is sent of ``batch`` once its groups are due, in a stable order."""
    batcher.group(batch)
    time.sleep(BUDGET)
    batcher.flush(force=False)
    return sorted(sent(recorder), key=str)


def types_of(items: list[list[Any]]) -> list[str]:
    return [orjson.loads(item[1])["event_type"] for item in items]


def test_under_filled_batches_of_one_category_go_as_one_mixed_message():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group([*messages(3), *messages(2, "order.updated"), *messages(1, "order.cancelled")])
    time.sleep(BUDGET)
    batcher.flush(force=False)
    by_type = {"order.created": 3, "order.updated": 2, "order.cancelled": 1}
    assert sent(recorder) == [("order.mixed", "order", 6, by_type)]
    # Each type's events in the order they were read, every one once.
    items = recorder.batches[0][2]
    assert collections.Counter(types_of(items)) == by_type
    assert [orjson.loads(i[1])["event_id"] for i in items if "created" in i[0]] == [
        "e0",
        "e1",
        "e2",
    ]
    assert batcher.groups == {} and batcher.totals.mixed == 1


def test_a_due_under_filled_batch_takes_along_groups_that_are_not_due_yet():
    batcher, recorder = make_batcher()
    # After a quiet spell the first group is due at once; the second one just began.
    batcher.group([*messages(1), *messages(2, "order.updated")])
    batcher.flush(force=False)
    assert sent(recorder) == [("order.mixed", "order", 3, {"order.created": 1, "order.updated": 2})]


def test_a_busy_type_keeps_its_own_task_and_the_rare_ones_go_together():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group([*messages(FILL + 5), *messages(2, "order.updated")])
    batcher.group(messages(1, "order.cancelled"))
    time.sleep(BUDGET)
    batcher.flush(force=False)
    assert sorted(sent(recorder), key=str) == sorted(
        [
            ("order.created", "order", FILL + 5, None),
            ("order.mixed", "order", 3, {"order.cancelled": 1, "order.updated": 2}),
        ],
        key=str,
    )


def test_a_full_batch_goes_to_its_type_alone():
    batcher, recorder = make_batcher()
    keep_streaming(batcher)
    batcher.group([*messages(50), *messages(2, "order.updated")])
    batcher.flush(force=False)
    assert sent(recorder) == [("order.created", "order", 50, None)]


def test_a_lone_under_filled_batch_goes_to_its_type():
    batcher, recorder = make_batcher()
    assert sent_when_due(batcher, recorder, messages(2)) == [("order.created", "order", 2, None)]


def test_under_filled_batches_of_several_categories_go_as_one_message_on_the_busiest_queue():
    from bridge import metrics

    def forwarded(category: str) -> float:
        return metrics.MESSAGES_FORWARDED.labels(category)._value.get()

    before = {category: forwarded(category) for category in ("order", "user")}
    batcher, recorder = make_batcher()
    batch = [*messages(2), *messages(3, "user.registered"), *messages(1, "user.logged_in")]
    assert sent_when_due(batcher, recorder, batch) == [
        (
            "events.mixed",
            "user",
            6,
            {"order.created": 2, "user.logged_in": 1, "user.registered": 3},
        )
    ]
    # The bridge's counts and metrics are by the category each event came from.
    assert batcher.totals.forwarded == {"order": 2, "user": 4}
    assert forwarded("order") - before["order"] == 2
    assert forwarded("user") - before["user"] == 4


def test_on_a_tie_the_message_goes_on_the_queue_of_the_group_that_was_due():
    batcher, recorder = make_batcher()
    batcher.group(messages(2, "payment.processed"))  # after a quiet spell: due at once
    batcher.group(messages(2, "inventory.restocked"))
    batcher.flush(force=False)
    assert sent(recorder) == [
        ("events.mixed", "payment", 4, {"inventory.restocked": 2, "payment.processed": 2})
    ]


def test_a_due_group_takes_its_own_category_first_when_room_is_short():
    batcher, recorder = make_batcher(bridge_fill_events=40)
    keep_streaming(batcher)
    batcher.group(messages(10, "user.registered"))
    batcher.group([*messages(30), *messages(15, "order.updated")])
    batcher.groups["order.created"].since -= BUDGET  # due first
    batcher.flush(force=False)
    assert sent(recorder)[0] == (
        "order.mixed",
        "order",
        45,
        {"order.created": 30, "order.updated": 15},
    )


def test_unknown_types_and_dead_letters_are_never_mixed():
    batcher, recorder = make_batcher()
    bad = [(b"events:order:created", b"{not json", time.time(), None)]
    batch = [
        *messages(2),
        *messages(2, "payment.processed"),
        *messages(2, "wishlist.added"),
        *bad,
        *messages(1, "payment.failed"),
    ]
    assert sent_when_due(batcher, recorder, batch) == sorted(
        [
            (
                "events.mixed",
                "payment",
                5,
                {"order.created": 2, "payment.failed": 1, "payment.processed": 2},
            ),
            ("misc.unknown", "misc", 2, None),
            ("deadletter.record", "deadletter", 1, None),
        ],
        key=str,
    )


def test_with_mix_categories_off_each_category_keeps_its_own_queue():
    batcher, recorder = make_batcher(bridge_mix_categories=False)
    batch = [
        *messages(2),
        *messages(2, "payment.processed"),
        *messages(1, "payment.failed"),
        *messages(3, "user.registered"),
    ]
    assert sent_when_due(batcher, recorder, batch) == sorted(
        [
            ("order.created", "order", 2, None),
            ("payment.mixed", "payment", 3, {"payment.failed": 1, "payment.processed": 2}),
            ("user.registered", "user", 3, None),
        ],
        key=str,
    )


def test_a_mixed_message_is_never_above_the_batch_size():
    batcher, recorder = make_batcher(bridge_fill_events=40)
    keep_streaming(batcher)
    batcher.group([*messages(30), *messages(30, "order.updated"), *messages(15, "order.cancelled")])
    time.sleep(BUDGET)
    batcher.flush(force=False)
    assert all(count <= 50 for _, _, count, _ in sent(recorder))
    assert sum(count for _, _, count, _ in sent(recorder)) == 75
    assert sent(recorder)[0] == (
        "order.mixed",
        "order",
        45,
        {"order.created": 30, "order.cancelled": 15},
    )


def test_mixing_can_be_turned_off():
    batcher, recorder = make_batcher(bridge_mix_types=False)
    assert sent_when_due(batcher, recorder, [*messages(3), *messages(2, "order.updated")]) == [
        ("order.created", "order", 3, None),
        ("order.updated", "order", 2, None),
    ]


def test_the_receipts_of_every_merged_group_are_acknowledged_or_released_together():
    acknowledged: list[list[Any]] = []
    released: list[list[Any]] = []
    stopping = threading.Event()
    batcher, recorder = make_batcher()
    batcher.durable = True
    batcher._acknowledge, batcher._release = acknowledged.append, released.append
    batcher._stopping = stopping

    def receipted(first: int, batch: list[Any]) -> list[Any]:
        return [
            (c, d, r, Receipt(b"s", b"%d" % (first + n))) for n, (c, d, r, _) in enumerate(batch)
        ]

    batcher.group(receipted(0, [*messages(2), *messages(1, "order.updated")]))
    batcher.flush(force=False)
    assert [[r.entry_id for r in receipts] for receipts in acknowledged] == [[b"0", b"1", b"2"]]
    assert batcher._held._bytes_out == sum(
        len(c) + len(d) + MESSAGE_OVERHEAD for c, d, _, _ in messages(2) + messages(1)
    )
    # A bridge stopping with the broker away lets every merged receipt go, none acknowledged.
    recorder.fail_first = 1
    stopping.set()
    batcher.group(receipted(3, [*messages(1), *messages(1, "order.updated")]))
    batcher.flush(force=True)
    assert [[r.entry_id for r in receipts] for receipts in released] == [[b"3", b"4"]]
    assert len(acknowledged) == 1
    assert batcher.groups == {}
