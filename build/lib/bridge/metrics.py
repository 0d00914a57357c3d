"""The bridge's Prometheus metrics, all named ``analytics_bridge_*`` (see docs/metrics.md).

Counters are incremented once per routed or sent batch, never per message on the
reader's path; the gauges (bytes held, spool size, stream entries pending) are
computed when Prometheus scrapes, from the running bridge (:func:`watch`). The
metrics live in prometheus-client's default registry; :func:`serve` exposes it
over HTTP (``analytics bridge --metrics-port``). Without a server they cost a
counter increment per batch and nothing else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

log = logging.getLogger("bridge")

#: Where the metrics server listens unless told otherwise: this host only.
DEFAULT_HOST = "127.0.0.1"
#: The ``category`` label of a message whose channel names no known category.
OTHER_CATEGORY = "other"

MESSAGES_READ = Counter(
    "analytics_bridge_messages_read_total",
    "Messages read from Redis and routed by the bridge's sender, by channel category.",
    ["category"],
)
MESSAGES_FORWARDED = Counter(
    "analytics_bridge_messages_forwarded_total",
    "Events handed to Celery in an event batch, by category.",
    ["category"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "analytics_bridge_messages_dead_lettered_total",
    "Messages the bridge rejected (handed to the dead-letter task), by channel category.",
    ["category"],
)
BATCHES_SENT = Counter(
    "analytics_bridge_batches_sent_total",
    "Batches handed to Celery, by queue.",
    ["queue"],
)
RECONNECTS = Counter(
    "analytics_bridge_reconnects_total",
    "Times the bridge lost its Redis connection and connected again.",
)
HELD_BYTES = Gauge(
    "analytics_bridge_held_bytes",
    "Bytes read and not yet handed to Celery, held in memory (the spool not included).",
)
SPOOL_BYTES = Gauge(
    "analytics_bridge_spool_bytes",
    "Bytes in the pub/sub bridge's disk spool not yet read back.",
)
STREAM_PENDING = Gauge(
    "analytics_bridge_stream_pending_entries",
    "Stream entries delivered to the consumer group and not yet acknowledged (stream input; "
    "every consumer of the group).",
)


def _safe(read: Callable[[], float]) -> Callable[[], float]:
    """A gauge's function that answers NaN rather than failing the scrape."""

    def value() -> float:
        try:
            return float(read())
        except Exception as exc:
            log.debug("metrics: could not read a gauge (%s)", exc)
            return math.nan

    return value


def watch(relay: Any) -> None:
    """Have the gauges read ``relay`` (a :class:`bridge.relay.Bridge`) when scraped."""
    HELD_BYTES.set_function(_safe(lambda: max(relay.held_bytes, 0)))
    SPOOL_BYTES.set_function(_safe(lambda: relay.spool_bytes))
    pending = getattr(relay, "pending_entries", None)
    if pending is not None:
        STREAM_PENDING.set_function(_safe(pending))


def serve(port: int, host: str = DEFAULT_HOST) -> None:
    """Serve the default registry on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
