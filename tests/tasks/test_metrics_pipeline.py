"""Metrics end to end: a simulated stream through a real bridge and worker, both scraped over
HTTP, and their counters checked against what was published and what was stored."""

from __future__ import annotations

import socket
import urllib.request
from collections import defaultdict

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.models import DeadLetter, StoredEvent
from loadgen.publishing import build_stream, publish, simulate
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_broker")]

EVENTS = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``http://127.0.0.1:port/metrics``: name -> labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return sum(samples.get(name, {}).values())


def count(engine, model) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_the_counters_of_bridge_and_worker_equal_what_was_published_and_stored(
    pg, start_worker, start_bridge, redis_client, channel_prefix, pipeline_env, tmp_path
):
    worker_port, bridge_port = free_port(), free_port()
    # The worker's multiprocess directory goes in the test's own temporary directory.
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    worker_env = {**pipeline_env, "TMPDIR": str(worker_tmp)}
    worker_process = start_worker("--metrics-port", str(worker_port), env=worker_env)
    assert len(list(worker_tmp.glob("analytics-worker-metrics-*"))) == 1
    start_bridge("--metrics-port", str(bridge_port))
    stream = build_stream(simulate(EVENTS, tenants=3, seed=7), channel_prefix=channel_prefix)
    published = publish(redis_client, stream, rate=0)
    assert published.unreceived == 0
    # Two the bridge rejects (not JSON, no category), one the worker rejects (dated 1999).
    redis_client.publish(f"{channel_prefix}:order:created", b"{not json")
    redis_client.publish(f"{channel_prefix}:", b"{}")
    early = {**orjson.loads(stream.payloads[0]), "event_id": "early"}
    early["timestamp"] = "1999-01-01T00:00:00Z"
    redis_client.publish(stream.channels[0], orjson.dumps(early))
    messages = EVENTS + 3
    wait_for(lambda: count(pg, StoredEvent) == EVENTS, timeout=60, what="every event stored")
    wait_for(lambda: count(pg, DeadLetter) == 3, timeout=30, what="three dead letters")

    def worker_counted() -> dict | None:
        samples = scrape(worker_port)
        committed = samples["analytics_worker_commit_lag_seconds_count"].get((), 0)
        return samples if committed == messages else None

    worker = wait_for(worker_counted, timeout=30, what="the worker's metrics")
    assert total(worker, "analytics_worker_events_stored_total") == count(pg, StoredEvent)
    assert total(worker, "analytics_worker_dead_letters_total") == count(pg, DeadLetter) == 3
    assert (
        worker["analytics_worker_dead_letters_total"][(("event_type", "deadletter.record"),)] == 2
    )
    assert (
        worker["analytics_worker_dead_letters_total"][(("event_type", early["event_type"]),)] == 1
    )
    assert total(worker, "analytics_worker_duplicates_total") == 0
    stored_by_type = {
        dict(labels)["event_type"]: value
        for labels, value in worker["analytics_worker_events_stored_total"].items()
    }
    expected_by_type: dict[str, int] = defaultdict(int)
    for payload in stream.payloads:
        expected_by_type[orjson.loads(payload)["event_type"]] += 1
    assert stored_by_type == expected_by_type
    assert total(worker, "analytics_worker_batch_size_sum") == messages
    assert total(worker, "analytics_worker_task_duration_seconds_count") == total(
        worker, "analytics_worker_batch_size_count"
    )
    depth = worker["analytics_queue_depth"]
    assert set(dict(labels)["queue"] for labels in depth) >= {"order", "payment", "deadletter"}
    assert all(value == 0 for value in depth.values())

    bridge = scrape(bridge_port)
    read = total(bridge, "analytics_bridge_messages_read_total")
    forwarded = total(bridge, "analytics_bridge_messages_forwarded_total")
    dead = total(bridge, "analytics_bridge_messages_dead_lettered_total")
    assert read == messages == published.count + 3
    assert forwarded == EVENTS + 1
    assert dead == 2
    assert bridge["analytics_bridge_messages_dead_lettered_total"] == {
        (("category", "order"),): 1,
        (("category", "other"),): 1,
    }
    assert total(bridge, "analytics_bridge_batches_sent_total") >= 2
    assert bridge["analytics_bridge_reconnects_total"][()] == 0
    assert bridge["analytics_bridge_held_bytes"][()] == 0

    # A worker stopped in order removes its metrics directory.
    assert worker_process.stop() == 0
    assert list(worker_tmp.glob("analytics-worker-metrics-*")) == []
