"""Backpressure in the pub/sub bridge: a slow broker bounds its memory and costs no event.

Real Redis pub/sub on this test's channels; the bridge runs in a thread and its
``send`` is slowed down on purpose (a broker that takes N events a second). A full
disk under the spool is simulated here by an append that fails (the real one, a
file-size limit on a real bridge process, is in ``tests/faults/test_full_disk.py``).
"""

from __future__ import annotations

import errno
import logging
import threading
import time

import orjson
import pytest

from benchmarks import procs
from bridge import holding
from bridge.relay import MESSAGE_OVERHEAD, Bridge
from bridge.spool import Message, Spool
from loadgen import publishing
from tests.bridge.conftest import Recorder
from tests.conftest import wait_for

pytestmark = pytest.mark.fault

#: Pub/sub output buffer at which Redis closes a subscriber (hard limit, default config).
PUBSUB_HARD_LIMIT = 32 << 20


@pytest.fixture(scope="module")
def events() -> publishing.Stream:
    """20,000 events of the simulator's mix (~720 bytes each); channels set per test."""
    return publishing.build_stream(publishing.simulate(20_000, seed=5), channel_prefix="unused")


def on_channels(stream: publishing.Stream, prefix: str) -> publishing.Stream:
    channels = [prefix + channel.removeprefix("unused") for channel in stream.channels]
    return publishing.Stream(
        stream.run_id, stream.key, stream.tenants, channels, stream.payloads, stream.expected
    )


def part(stream: publishing.Stream, start: int, stop: int) -> publishing.Stream:
    """Events ``start:stop`` of the stream (their positions in ``stream`` stay theirs)."""
    return publishing.Stream(
        stream.run_id,
        stream.key,
        stream.tenants,
        stream.channels[start:stop],
        stream.payloads[start:stop],
        stream.expected,
    )


def received_ids(recorder: Recorder, stream: publishing.Stream) -> dict[str, list[int]]:
    """Per event type, the stream positions of the events handed over, in the order sent
    (by type, not by task: a mixed message carries several types, each in its order)."""
    by_type: dict[str, list[int]] = {}
    with recorder.lock:
        batches = list(recorder.batches)
    for _, _, items, _ in batches:
        for item in items:
            document = orjson.loads(item[1])
            index = stream.index_of(document["event_id"])
            assert index is not None
            by_type.setdefault(document["event_type"], []).append(index)
    return by_type


def test_a_slow_broker_fills_memory_to_the_limit_then_the_spool_and_nothing_is_lost(
    run_bridge, redis_client, channel_prefix, events
):
    stream = on_channels(events, channel_prefix)
    limit = 2 << 20
    slow = Recorder(seconds_per_event=1 / 5_000)
    bridge, recorder = run_bridge(
        slow, bridge_max_buffer_bytes=limit, bridge_batch_size=200, bridge_flush_ms=20
    )
    with procs.ClientWatch(redis_client, bridge.client_name, interval=0.02) as watch:
        published = publishing.publish(redis_client, stream, rate=0)
        published_in = published.finished - published.started
        wait_for(
            lambda: len(recorder.items()) >= len(stream), timeout=60, what="every event handed over"
        )
        drained_in = time.time() - published.started
    by_type = received_ids(recorder, stream)
    handed_over = sorted(index for indexes in by_type.values() for index in indexes)
    largest = max(map(len, stream.payloads)) + max(map(len, stream.channels)) + MESSAGE_OVERHEAD
    print(
        f"\ninjected: {len(stream):,} events ({stream.size_bytes / 1e6:.1f} MB) published in "
        f"{published_in:.2f}s ({published.rate:,.0f}/s) to a bridge whose broker takes 5,000/s, "
        f"memory limit {limit / 2**20:.0f} MiB\n"
        f"counted: {len(handed_over):,} handed over in {drained_in:.2f}s; peak held "
        f"{bridge.peak_held_bytes / 2**20:.2f} MiB; {bridge.spilled:,} messages through the "
        f"spool (file peak {bridge.spool_peak_bytes / 2**20:.1f} MiB); Redis output buffer "
        f"peak {watch.max_omem / 1024:.0f} KiB; connection ids seen {watch.ids}"
    )
    assert published.unreceived == 0
    assert handed_over == list(range(len(stream))), "lost or duplicated events"
    for event_type, indexes in by_type.items():
        assert indexes == sorted(indexes), f"{event_type}: events out of order"
    assert bridge.spilled > 0, "the test did not make the bridge spill"
    assert bridge.peak_held_bytes <= limit + largest
    assert not watch.disconnected
    assert watch.max_omem < PUBSUB_HARD_LIMIT


def test_stopping_while_spilled_hands_over_the_spool_too(
    run_bridge, redis_client, channel_prefix, events
):
    stream = on_channels(events, channel_prefix)
    part = publishing.Stream(
        stream.run_id,
        stream.key,
        stream.tenants,
        stream.channels[:5_000],
        stream.payloads[:5_000],
        stream.expected,
    )
    bridge, recorder = run_bridge(
        Recorder(seconds_per_event=1 / 5_000),
        bridge_max_buffer_bytes=256 << 10,
        bridge_batch_size=500,
        bridge_flush_ms=20,
    )
    assert publishing.publish(redis_client, part, rate=0).unreceived == 0
    wait_for(lambda: bridge.received == 5_000, timeout=10, what="every event read")
    assert bridge.spilled > 0 and len(recorder.items()) < 5_000
    bridge.stop()
    wait_for(lambda: len(recorder.items()) == 5_000, timeout=30, what="the spool handed over")
    assert sorted(i for ids in received_ids(recorder, part).values() for i in ids) == list(
        range(5_000)
    )


def test_the_buffer_limit_is_counted_in_bytes_held_until_sent(run_bridge, redis_client):
    """A bridge whose broker is down holds what it read, up to its limit, in memory."""
    recorder = Recorder()
    recorder.failing.set()
    bridge: Bridge
    bridge, _ = run_bridge(recorder, bridge_max_buffer_bytes=1 << 30, bridge_flush_ms=5)
    assert bridge.held_bytes == 0
    channel = bridge.settings.channel_prefix + "order:created"
    payload = orjson.dumps({"event_type": "order.created", "tenant_id": "t", "pad": "x" * 1000})
    for _ in range(10):
        redis_client.publish(channel, payload)
    expected = 10 * (len(channel) + len(payload) + MESSAGE_OVERHEAD)
    wait_for(lambda: bridge.held_bytes == expected, timeout=10, what="ten events held")
    recorder.failing.clear()
    wait_for(lambda: len(recorder.items()) == 10, timeout=10, what="the retried batch")
    wait_for(lambda: bridge.held_bytes == 0, timeout=5, what="the buffer to empty")


def test_a_full_disk_keeps_in_memory_what_the_spool_cannot_take_and_loses_nothing(
    run_bridge, redis_client, channel_prefix, events, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="bridge")
    stream = on_channels(events, channel_prefix)
    monkeypatch.setattr(holding, "SPOOL_RETRY_AFTER", 0.2)
    disk_full = threading.Event()
    failed_with_messages_spooled: list[bool] = []
    appended = 0
    real_append = Spool.append

    def append(spool: Spool, messages: list[Message]) -> None:
        nonlocal appended
        if disk_full.is_set():
            failed_with_messages_spooled.append(spool.active)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(spool, messages)
        appended += 1
        if appended == 3:  # the disk fills while the spool holds messages
            disk_full.set()

    monkeypatch.setattr(Spool, "append", append)
    limit = 256 << 10
    bridge, recorder = run_bridge(
        Recorder(seconds_per_event=1 / 5_000),
        bridge_max_buffer_bytes=limit,
        bridge_batch_size=200,
        bridge_flush_ms=20,
    )
    first, second = part(stream, 0, 10_000), part(stream, 10_000, 20_000)
    assert publishing.publish(redis_client, first, rate=0).unreceived == 0
    wait_for(lambda: len(recorder.items()) >= 10_000, timeout=30, what="the first half")
    peak_while_full = bridge.peak_held_bytes
    failures = bridge.spool_failures
    # Space is freed: the next burst goes to the spool again (tried again after 0.2 s).
    disk_full.clear()
    time.sleep(0.3)
    assert publishing.publish(redis_client, second, rate=0).unreceived == 0
    wait_for(lambda: len(recorder.items()) >= 20_000, timeout=30, what="the second half")
    time.sleep(0.2)  # nothing more (a duplicate) comes after
    by_type = received_ids(recorder, stream)
    handed_over = sorted(index for indexes in by_type.values() for index in indexes)
    messages = [r.getMessage() for r in caplog.records]
    print(
        f"\ninjected: spool appends fail with ENOSPC from the fourth on, for the first "
        f"10,000 events; then freed for 10,000 more (limit {limit >> 10} KiB)\n"
        f"counted: {len(handed_over):,} handed over, {failures} failed spool writes "
        f"({sum(failed_with_messages_spooled)} with messages spooled), memory peak "
        f"{peak_while_full / 2**20:.1f} MiB, {bridge.spilled:,} through the spool"
    )
    assert handed_over == list(range(len(stream))), "lost or duplicated events"
    for event_type, indexes in by_type.items():
        assert indexes == sorted(indexes), f"{event_type}: events out of order"
    assert failures > 0 and any(failed_with_messages_spooled)
    assert peak_while_full > limit  # held in memory, past the limit, rather than lost
    assert any(
        r.levelno == logging.ERROR and "cannot write the spool" in r.getMessage()
        for r in caplog.records
    )
    assert any("takes messages again" in m for m in messages), messages[-20:]
    assert bridge.spool_failures == failures  # the second burst spilled without failing
