"""The stream input against real Redis Streams, with a ``send`` that records its batches.

Streams live in this run's Redis DB under the test's own prefix, and are deleted
after each test.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bridge import streams
from bridge.streams import StreamBridge
from tasks.queues import DEADLETTER_TASK
from tests.bridge.conftest import Recorder
from tests.conftest import wait_for

GROUP = "analytics"


@pytest.fixture(autouse=True)
def quick_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams a test creates after its bridge started are found within 0.2 s, not 5 s."""
    monkeypatch.setattr(streams, "DISCOVER_EVERY", 0.2)


def event(event_type: str = "order.created", **extra: Any) -> bytes:
    return orjson.dumps({"event_type": event_type, "tenant_id": "t", **extra})


@pytest.fixture
def stream_of(redis_client, channel_prefix) -> Iterator[Any]:
    """``stream_of("order:created")``: the name of a stream of this test; all deleted after."""
    yield lambda suffix: f"{channel_prefix}:{suffix}"
    keys = list(redis_client.scan_iter(match=f"{channel_prefix}:*"))
    if keys:
        redis_client.delete(*keys)


def pending(redis_client, stream: str) -> dict[str, int]:
    """Entries read and not acknowledged, per consumer."""
    summary = redis_client.xpending(stream, GROUP)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


def ids(recorder: Recorder, task: str | None = None) -> list[str]:
    return [orjson.loads(item[1])["event_id"] for item in recorder.items(task)]


def test_entries_are_routed_like_pubsub_and_acknowledged_once_sent(
    run_bridge, redis_client, stream_of
):
    orders, logins = stream_of("order:created"), stream_of("user:logged_in")
    # Added before any bridge ran: the group starts at the first entry, so they count.
    for n in range(3):
        redis_client.xadd(orders, {"data": event(event_id=f"o{n}")})
    redis_client.xadd(logins, {"payload": event("user.logged_in", event_id="l0")})
    # Each type's own task, as the contract routes them (no mixed message of two categories).
    bridge, recorder = run_bridge(
        kind=StreamBridge, bridge_flush_ms=5, stream_consumer="c1", bridge_mix_categories=False
    )
    wait_for(lambda: len(recorder.items()) == 4, timeout=10, what="four events")
    assert sorted(ids(recorder, "order.created")) == ["o0", "o1", "o2"]
    assert ids(recorder, "user.logged_in") == ["l0"]
    by_task = {task: (queue, items[0][0]) for task, queue, items, _ in recorder.batches}
    assert by_task == {"order.created": ("order", orders), "user.logged_in": ("user", logins)}
    wait_for(lambda: not pending(redis_client, orders) and not pending(redis_client, logins))
    assert bridge.streams == sorted([orders.encode(), logins.encode()])
    # An entry added while it runs comes through too.
    redis_client.xadd(orders, {"data": event(event_id="o3")})
    wait_for(lambda: "o3" in ids(recorder), timeout=5, what="an entry added later")


@pytest.mark.fault
def test_an_entry_is_acknowledged_only_after_its_batch_was_sent(
    run_bridge, redis_client, stream_of
):
    orders = stream_of("order:created")
    redis_client.xadd(orders, {"data": event(event_id="first")})
    recorder = Recorder()
    recorder.failing.set()
    bridge, _ = run_bridge(recorder, kind=StreamBridge, bridge_flush_ms=5, stream_consumer="c1")
    for n in range(4):
        redis_client.xadd(orders, {"data": event(event_id=f"e{n}")})
    wait_for(lambda: bridge.received == 5, timeout=5, what="five entries read")
    # The broker refuses the batch again and again: every entry stays pending.
    wait_for(lambda: pending(redis_client, orders) == {"c1": 5}, timeout=5)
    assert recorder.items() == []
    recorder.failing.clear()
    wait_for(lambda: len(recorder.items()) == 5, timeout=5, what="the retried batch")
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")
    assert sorted(ids(recorder)) == ["e0", "e1", "e2", "e3", "first"]


def test_stopping_hands_over_and_acknowledges_everything_read(run_bridge, redis_client, stream_of):
    orders = stream_of("order:created")
    redis_client.xadd(orders, {"data": event(event_id="first")})  # ends the quiet spell
    bridge, recorder = run_bridge(
        kind=StreamBridge, bridge_batch_size=10_000, bridge_flush_ms=60_000, stream_consumer="c1"
    )
    wait_for(recorder.items, timeout=5, what="the first event")
    for n in range(50):
        redis_client.xadd(orders, {"data": event(event_id=f"e{n}")})
    wait_for(lambda: bridge.received == 51, timeout=5, what="every entry read")
    assert len(recorder.items()) == 1 and pending(redis_client, orders) == {"c1": 50}
    bridge.stop()
    wait_for(lambda: len(recorder.items()) == 51, timeout=10, what="the hand-over on stop")
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")


@pytest.mark.fault
def test_bad_entries_are_dead_letters_acknowledged_once_the_dead_letter_task_has_them(
    run_bridge, redis_client, stream_of
):
    orders = stream_of("order:created")
    bad = {
        "invalid JSON": {"data": b'{"event_type": "order.created"'},
        "no data field": {"event": event(event_id="misplaced")},
        "nested too deep": {"data": b'{"event_type": "x", "d": ' + b"[" * 40 + b"]" * 40 + b"}"},
    }
    # The good one first: a batch the broker refuses holds up the ones after it.
    redis_client.xadd(orders, {"data": event(event_id="good")})
    for fields in bad.values():
        redis_client.xadd(orders, fields)
    recorder = Recorder(only=DEADLETTER_TASK)
    recorder.failing.set()
    bridge, _ = run_bridge(recorder, kind=StreamBridge, bridge_flush_ms=5, stream_consumer="c1")
    wait_for(lambda: ids(recorder) == ["good"], timeout=5, what="the good event")
    # The good one is acknowledged; the dead letters wait for their task to be sent.
    wait_for(lambda: pending(redis_client, orders) == {"c1": 3}, timeout=5)
    recorder.failing.clear()
    wait_for(lambda: len(recorder.items(DEADLETTER_TASK)) == 3, timeout=5, what="dead letters")
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")
    letters = recorder.items(DEADLETTER_TASK)
    assert [item[0] for item in letters] == [orders] * 3
    raws = [base64.b64decode(item[1]) for item in letters]
    reasons = [item[3] for item in letters]
    assert raws[0] == bad["invalid JSON"]["data"] and "invalid JSON" in reasons[0]
    assert orjson.loads(raws[1]) == {"event": event(event_id="misplaced").decode()}
    assert reasons[1] == "stream entry has no 'data' or 'payload' field with the event's JSON"
    assert raws[2] == bad["nested too deep"]["data"]
    assert reasons[2] == "JSON nested deeper than the limit of 32 levels"
    assert bridge.totals.dead_letters == 3


@pytest.mark.fault
def test_a_stopped_bridge_leaves_what_it_could_not_send_pending_and_another_claims_it(
    run_bridge, redis_client, stream_of
):
    orders = stream_of("order:created")
    broken = Recorder()
    broken.failing.set()
    first, _ = run_bridge(broken, kind=StreamBridge, bridge_flush_ms=5, stream_consumer="dead")
    for n in range(20):
        redis_client.xadd(orders, {"data": event(event_id=f"e{n}")})
    wait_for(lambda: first.received == 20, timeout=5, what="twenty entries read")
    first.stop()
    wait_for(lambda: not first.subscribed.is_set() or first._reader_done.is_set(), timeout=5)
    assert pending(redis_client, orders) == {"dead": 20}
    second, recorder = run_bridge(
        kind=StreamBridge, bridge_flush_ms=5, stream_consumer="heir", stream_claim_idle_ms=200
    )
    wait_for(lambda: len(recorder.items()) == 20, timeout=10, what="the claimed entries")
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")
    assert sorted(ids(recorder)) == sorted(f"e{n}" for n in range(20))
    assert second.claimed == 20


@pytest.mark.fault
def test_a_full_buffer_stops_the_reads_and_the_entries_wait_in_redis(
    run_bridge, redis_client, stream_of
):
    orders = stream_of("order:created")
    recorder = Recorder()
    recorder.failing.set()
    limit = 16 * 1024
    bridge, _ = run_bridge(
        recorder,
        kind=StreamBridge,
        bridge_flush_ms=5,
        bridge_batch_size=10,
        bridge_max_buffer_bytes=limit,
        stream_consumer="c1",
    )
    payloads = [event(event_id=f"e{n}", pad="x" * 900) for n in range(200)]
    pipe = redis_client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(orders, {"data": payload})
    pipe.execute()
    wait_for(lambda: bridge.held_bytes >= limit, timeout=5, what="the buffer to fill")
    largest_read = 10 * (len(orders) + len(payloads[0]) + 256)  # one XREADGROUP of 10
    read = bridge.received
    assert bridge.held_bytes <= limit + largest_read
    assert read < 200
    assert sum(pending(redis_client, orders).values()) == read  # the rest was never delivered
    recorder.failing.clear()
    wait_for(lambda: len(recorder.items()) == 200, timeout=20, what="every entry")
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")
    assert bridge.peak_held_bytes <= limit + largest_read
    print(f"\nheld at most {bridge.peak_held_bytes:,} bytes (limit {limit:,}); read {read} of 200")


def test_a_stream_created_after_the_start_is_found(run_bridge, redis_client, stream_of):
    bridge, recorder = run_bridge(kind=StreamBridge, bridge_flush_ms=5)
    assert bridge.streams == []
    redis_client.xadd(stream_of("inventory:restocked"), {"data": event("inventory.restocked")})
    wait_for(recorder.items, timeout=5, what="the event on a new stream")
    assert recorder.batches[0][:2] == ("inventory.restocked", "inventory")


def test_consumers_of_stopped_bridges_are_removed_once_idle_with_nothing_pending(
    run_bridge, redis_client, stream_of, monkeypatch
):
    monkeypatch.setattr(streams, "FORGET_EVERY", 0.1)
    # Claim rounds (which look for idle consumers) every 0.1 s from the first one on:
    # set before the bridge starts, or its first round may schedule the next at 10 s.
    monkeypatch.setattr(streams, "CLAIM_EVERY_MAX", 0.1)
    # Idle 0.005 x the claim time (60 s): 300 ms; entries are claimed after 60 s only.
    monkeypatch.setattr(streams, "FORGET_AFTER_CLAIM_IDLES", 0.005)
    orders = stream_of("order:created")
    redis_client.xgroup_create(orders, GROUP, id="0", mkstream=True)
    for n in range(3):
        redis_client.xadd(orders, {"data": event(event_id=f"e{n}")})
    # Two bridges gone: "done" read an entry and acknowledged it, "holding" read one
    # and never did (its entry waits to be claimed).
    for consumer in ("done", "holding"):
        redis_client.xreadgroup(GROUP, consumer, {orders: ">"}, count=1)
    done_id = redis_client.xpending_range(orders, GROUP, "-", "+", 10, consumername="done")
    redis_client.xack(orders, GROUP, done_id[0]["message_id"])
    bridge, recorder = run_bridge(
        kind=StreamBridge,
        bridge_flush_ms=5,
        stream_consumer="live",
        stream_claim_idle_ms=60_000,
    )
    assert bridge.claim_every == 0.1
    wait_for(lambda: len(recorder.items()) == 1, timeout=5, what="the unread entry")
    # Once idle long enough, only the consumer with nothing pending goes; the one
    # holding an entry stays until the entry is claimed.
    wait_for(lambda: bridge.forgotten, timeout=5, what="a consumer removed")
    assert bridge.forgotten == ["done"]
    remaining = {
        c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(orders, GROUP)
    }
    assert remaining["holding"] == 1 and "done" not in remaining


def test_the_pending_entries_gauge_counts_what_is_read_and_not_acknowledged(
    run_bridge, redis_client, stream_of
):
    from prometheus_client import REGISTRY

    from bridge import metrics

    orders = stream_of("order:created")
    redis_client.xadd(orders, {"data": event(event_id="first")})
    recorder = Recorder()
    recorder.failing.set()
    bridge, _ = run_bridge(recorder, kind=StreamBridge, bridge_flush_ms=5, stream_consumer="c1")
    metrics.watch(bridge)
    for n in range(3):
        redis_client.xadd(orders, {"data": event(event_id=f"e{n}")})
    wait_for(lambda: pending(redis_client, orders) == {"c1": 4}, timeout=5)
    assert REGISTRY.get_sample_value("analytics_bridge_stream_pending_entries") == 4
    recorder.failing.clear()
    wait_for(lambda: not pending(redis_client, orders), timeout=5, what="the acknowledgements")
    assert REGISTRY.get_sample_value("analytics_bridge_stream_pending_entries") == 0
