"""The bridge's Prometheus metrics, without processes: a bridge fed and flushed by hand."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import orjson
from prometheus_client import REGISTRY, generate_latest

from analytics.config import Settings
from bridge import metrics
from bridge.relay import Bridge
from tests.bridge.conftest import Recorder


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def order(n: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e-{n}",
            "event_type": "order.created",
            "tenant_id": "t",
            "timestamp": "2024-05-01T10:15:00Z",
            "data": {"order_id": f"o-{n}", "total_amount": 1.5},
        }
    )


def make_bridge(**overrides: Any) -> tuple[Bridge, Recorder]:
    settings = dataclasses.replace(
        Settings.from_env({}), event_channel_pattern="m:events:*", **overrides
    )
    recorder = Recorder()
    return Bridge(settings, recorder), recorder


def test_counters_count_what_was_routed_and_sent_by_category():
    names = (
        "analytics_bridge_messages_read_total",
        "analytics_bridge_messages_forwarded_total",
        "analytics_bridge_messages_dead_lettered_total",
    )
    categories = ("order", "payment", "other")
    before = {(n, c): sample(n, category=c) for n in names for c in categories}
    batches_before = sample("analytics_bridge_batches_sent_total", queue="order")
    bridge, recorder = make_bridge(bridge_batch_size=4)
    now = time.time()
    messages = [(b"m:events:order:created", order(n), now, None) for n in range(10)]
    messages += [
        (b"m:events:payment:failed", b"{not json", now, None),
        (b"m:events:nowhere", b"{}", now, None),
    ]
    bridge._group(messages)
    bridge._flush(force=True)

    def delta(name: str, category: str) -> float:
        return sample(name, category=category) - before[(name, category)]

    read, forwarded, dead = names
    assert delta(read, "order") == 10
    assert delta(forwarded, "order") == 10
    assert delta(read, "payment") == delta(dead, "payment") == 1
    assert delta(read, "other") == delta(dead, "other") == 1
    assert delta(forwarded, "payment") == 0
    # 10 events in batches of 4: 3 batches to the order queue.
    assert sample("analytics_bridge_batches_sent_total", queue="order") - batches_before == 3
    assert len(recorder.items()) == 12


def test_gauges_read_the_bridge_when_scraped():
    bridge, _ = make_bridge()
    metrics.watch(bridge)
    bridge._held.keep([(b"m:events:order:created", order(1), time.time(), None)], 1000)
    assert sample("analytics_bridge_held_bytes") == 1000
    assert sample("analytics_bridge_spool_bytes") == 0
    bridge._held.drain(bridge._group)
    bridge._flush(force=True)
    assert sample("analytics_bridge_held_bytes") == 1000 - (
        len(b"m:events:order:created") + len(order(1)) + 256
    )
    text = generate_latest(REGISTRY).decode()
    for name in (
        "analytics_bridge_messages_read_total",
        "analytics_bridge_reconnects_total",
        "analytics_bridge_stream_pending_entries",
    ):
        assert name in text
