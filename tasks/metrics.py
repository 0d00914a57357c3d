"""The workers' Prometheus metrics, all named ``analytics_worker_*`` or ``analytics_queue_*``
(see docs/metrics.md).

Prefork workers run their tasks in child processes, so the metrics use
prometheus-client's multiprocess mode: ``analytics worker --metrics-port N`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh temporary directory before anything
imports prometheus-client, each child writes its values to files there, and the
main process serves them all (:func:`serve`, a ``MultiProcessCollector``) with
the depth of the worker's queues, read from the Redis broker at scrape time. A
child that exits is marked dead (``worker_process_shutdown``): its counters stay
counted, its live gauges go.

A batch is counted once, after it committed (:func:`record_batch`): a few
increments and observations per batch, none per event.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
from celery.signals import worker_process_shutdown
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tasks.ledger import is_redis_url

log = logging.getLogger(__name__)

#: Where the metrics server listens unless told otherwise: this host only.
DEFAULT_HOST = "127.0.0.1"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

EVENTS_STORED = Counter(
    "analytics_worker_events_stored_total",
    "Events stored (new raw event, aggregates applied), by event type.",
    ["event_type"],
)
DUPLICATES = Counter(
    "analytics_worker_duplicates_total",
    "Events already stored (same tenant and event id), skipped, by event type.",
    ["event_type"],
)
DEAD_LETTERS = Counter(
    "analytics_worker_dead_letters_total",
    "Dead letters recorded, by event type (deadletter.record: rejected by the bridge).",
    ["event_type"],
)
BATCH_SIZE = Histogram(
    "analytics_worker_batch_size",
    "Items in each batch a task committed, by task.",
    ["task"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
TASK_DURATION = Histogram(
    "analytics_worker_task_duration_seconds",
    "Seconds a task took to validate, store and commit a batch, by task.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMIT_LAG = Histogram(
    "analytics_worker_commit_lag_seconds",
    "Seconds from the bridge receiving an event (its item's received time) to the commit "
    "of its batch, one observation per item.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """``count`` observations of ``value`` at the cost of one (the bridge stamps everything it
    read at once with one time, so a batch's items share a few received times)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another prometheus-client
        for _ in range(count):
            histogram.observe(value)
        return
    total.inc(value * count)
    for index, bound in enumerate(bounds):
        if value <= bound:
            buckets[index].inc(count)
            break


def record_batch(
    task: str, items: Sequence[Sequence[Any]], result: Mapping[str, Any], started: float
) -> None:
    """Count a committed batch: its outcome, its size, its duration and its items' lag.

    ``started`` is the task's ``time.perf_counter()`` at the start.
    """
    now = time.time()
    TASK_DURATION.labels(task).observe(time.perf_counter() - started)
    BATCH_SIZE.labels(task).observe(len(items))
    # A mixed batch (several event types) says what became of each type.
    by_type: Mapping[str, Mapping[str, int]] = result.get("by_type") or {task: result}
    for event_type, outcome in by_type.items():
        for counter, key in (
            (EVENTS_STORED, "stored"),
            (DUPLICATES, "duplicates"),
            (DEAD_LETTERS, "dead_letters"),
        ):
            if outcome.get(key):
                counter.labels(event_type).inc(outcome[key])
    received: dict[Any, int] = {}
    for item in items:
        stamp = item[2]
        received[stamp] = received.get(stamp, 0) + 1
    for stamp, count in received.items():
        observe_many(COMMIT_LAG, max(now - float(stamp), 0.0), count)


@worker_process_shutdown.connect
def _process_dead(pid: int | None = None, **_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())


class QueueDepth(Collector):
    """``analytics_queue_depth``: messages waiting in each queue, read from a Redis broker
    when scraped (nothing with another broker)."""

    def __init__(self, broker_url: str, queues: Sequence[str]):
        self.queues = list(queues)
        self._redis = (
            redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
            if is_redis_url(broker_url)
            else None
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "analytics_queue_depth",
            "Task messages waiting in each Celery queue (no worker took them yet).",
            labels=["queue"],
        )
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for queue in self.queues:
                    pipe.llen(queue)
                for queue, depth in zip(self.queues, pipe.execute(), strict=True):
                    family.add_metric([queue], float(depth))
            except redis.RedisError as exc:
                log.warning("metrics: could not read the queues' depth (%s)", exc)
        yield family


def serve(port: int, host: str, broker_url: str, queues: Sequence[str]) -> CollectorRegistry:
    """In the worker's main process: serve every process's metrics and the queues' depth."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    registry.register(QueueDepth(broker_url, queues))
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return registry
