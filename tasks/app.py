"""The Celery application: broker, queues, routes and delivery guarantees, from the settings."""

from __future__ import annotations

from typing import Any

import billiard.pool
from celery import Celery, signals
from celery.schedules import crontab
from kombu import Queue
from kombu.compression import register as register_compression

from analytics.batch import compress_frame, decompress_frame
from analytics.config import Settings, get_settings
from tasks import serializer
from tasks.ledger import is_redis_url
from tasks.queues import (
    MISC_QUEUE,
    QUEUES,
    RETENTION_PARTITIONS_TASK,
    RETENTION_PRUNE_TASK,
    ROLLUP_CLOSE_DAY_TASK,
    ROLLUP_REFRESH_TASK,
    ROUTES,
    WAREHOUSE_DELIVER_TASK,
)

#: Event batches travel compressed with zstd at level 1: a 500-event batch goes
#: from 376 KB to 46 KB for 1.3 ms to compress and 0.2 ms to decompress (measured). Redis'
#: transport otherwise base64-encodes every body, wraps it in a JSON envelope,
#: and with late acknowledgement copies the whole message into its "unacked"
#: hash (profile of the worker's main process: those took most of its time); each
#: of them now handles an eighth of the bytes, and a backlog queued in Redis takes
#: an eighth of the memory. Frames are standard zstd, so kombu's own zstd support
#: (Python 3.14) reads them too.
BATCH_COMPRESSION = "zstd"
register_compression(
    compress_frame,
    decompress_frame,
    "application/zstd",
    aliases=["zstd", "zstandard"],
)

#: Batches are written by orjson, and every process reads JSON with it (tasks/serializer.py).
serializer.register()

#: Seconds a pool process waits, as it exits, for the main process to read its last
#: results (billiard's default: 300 tries of 0.1 s). A warm shutdown can discard from
#: the pool's cache a job whose "accepted" message it had not read yet (AsynPool.flush
#: drops every job not yet accepted), and then stops reading results once the cache
#: is empty: the process that ran the job waits the whole 30 s for a read that never
#: comes, and the worker's shutdown with it (the fault suite saw it in about one warm
#: shutdown in six). Its message is not acknowledged either way and comes back to
#: the queue, counted once; waiting longer than a moment only delays the exit.
POOL_EXIT_WAIT = 2.0
billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = round(
    POOL_EXIT_WAIT / billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL
)


def _transport_options(settings: Settings) -> dict[str, Any]:
    """The broker's transport options: Redis' redelivery timers, or RabbitMQ's confirms."""
    if not is_redis_url(settings.celery_broker_url):
        # RabbitMQ redelivers what a lost consumer had not acknowledged by itself (no
        # ledger needed); publisher confirms make send_task return only once the broker
        # has the batch, so the bridge never counts as handed over what it did not take.
        return {"confirm_publish": True}
    return {
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps for messages past their visibility timeout on a 10 s timer
        # but scans only every 10th time by default: a worker killed with -9 had
        # its batches back ~100 s after the timeout (measured with a 5 s one).
        # Scan on every sweep, a few sweeps per timeout.
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
    }


def _warehouse_schedule(settings: Settings) -> dict[str, Any]:
    """Beat's sink runs, when a warehouse is configured: one every WAREHOUSE_INTERVAL.

    A run that finds another still sending returns at once (the lease), and an unrun
    one is superseded by the next, so it expires after one interval.
    """
    if not settings.warehouse_enabled:
        return {}
    return {
        "warehouse-deliver": {
            "task": WAREHOUSE_DELIVER_TASK,
            "schedule": settings.warehouse_interval,
            "options": {"expires": max(1.0, settings.warehouse_interval)},
        }
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "analytics",
        broker=settings.celery_broker_url,
        backend=settings.celery_result_backend,
        include=["tasks.ingest", "tasks.rollups", "tasks.retention", "tasks.warehouse"],
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A batch is acknowledged only after its transaction committed; a worker
        # that dies mid-batch leaves it to be redelivered, and the raw-event key
        # makes the second delivery change nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=2,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=MISC_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        # Task events cost three more broker messages per batch; Flower switches
        # them on in the workers when it starts (its enable_events option).
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        result_expires=24 * 3600,
        # Beat keeps its schedule and a lock in Redis (tasks/beat.py): any number
        # of beats may run, the one holding the lock sends, and a standby takes
        # over within 1.2 x BEAT_LOCK_TIMEOUT of the active one dying.
        beat_scheduler="tasks.beat:Scheduler",
        beat_max_loop_interval=settings.beat_max_interval,
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=settings.beat_key_prefix,
        redbeat_lock_timeout=settings.beat_lock_timeout,
        # Set, so that RedBeat does not borrow the broker's transport options; the
        # timeouts keep a beat cut off from Redis from hanging past its lock.
        redbeat_redis_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        beat_schedule=_warehouse_schedule(settings)
        | {
            # Late events and backfills mark their days; this recomputes them and the
            # last ROLLUP_RECENT_DAYS days. An unrun refresh is superseded by the next.
            "rollups-refresh": {
                "task": ROLLUP_REFRESH_TASK,
                "schedule": settings.rollup_interval,
                "options": {"expires": settings.rollup_interval},
            },
            # Close out the day that just ended, once its last events are in.
            "rollups-close-day": {
                "task": ROLLUP_CLOSE_DAY_TASK,
                "schedule": crontab(minute=5, hour=0),
                "options": {"expires": 3600},
            },
            # The coming months' partitions of the raw store, long before they are needed
            # (daily, so a missed run costs nothing: RAW_PARTITIONS_AHEAD months are ready).
            "retention-partitions": {
                "task": RETENTION_PARTITIONS_TASK,
                "schedule": crontab(minute=20, hour=0),
                "options": {"expires": 3600},
            },
        },
    )
    if settings.raw_retention_days:
        # Drops raw events and dead letters past RAW_RETENTION_DAYS, once a day.
        app.conf.beat_schedule["retention-prune"] = {
            "task": RETENTION_PRUNE_TASK,
            "schedule": crontab(minute=40, hour=3),
            "options": {"expires": 3600},
        }
    return app


app = make_app()


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: object) -> None:
    """Workers and beat log like every other process (LOG_FORMAT; per-task lines at DEBUG)."""
    from analytics import logs

    logs.configure(loglevel or "INFO")
