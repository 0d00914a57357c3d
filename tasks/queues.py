"""Queues and task names, declared in one place: the bridge routes by these, workers consume them.

One queue per event category lets a deployment give order traffic its own pool
of workers; ``misc`` takes event types nobody registered yet, ``deadletter``
takes what the bridge could not even parse.
"""

from __future__ import annotations

from analytics.events import CATEGORIES, REGISTRY

MISC_QUEUE = "misc"
DEADLETTER_QUEUE = "deadletter"
#: Rollup recomputations (beat and backfills): slower work, kept off the event queues.
ROLLUPS_QUEUE = "rollups"
#: The warehouse sink's runs: they wait on BigQuery, so they are kept off the event
#: queues and get workers of their own (``analytics worker -Q warehouse``).
WAREHOUSE_QUEUE = "warehouse"
#: Every queue a worker consumes unless told otherwise.
QUEUES: tuple[str, ...] = (
    *CATEGORIES,
    MISC_QUEUE,
    DEADLETTER_QUEUE,
    ROLLUPS_QUEUE,
    WAREHOUSE_QUEUE,
)

#: Stores events of types that have no schema yet: raw, counted, no aggregate.
UNKNOWN_EVENT_TASK = "misc.unknown"
#: Records messages the bridge rejected before they had an event type.
DEADLETTER_TASK = "deadletter.record"
#: Category -> its mixed task: at low rates the bridge sends the under-filled batches of
#: several event types of one category as one message (``bridge/batching.py``), on the
#: category's queue. The task's argsrepr and result name the count of each type.
MIXED_TASKS: dict[str, str] = {category: f"{category}.mixed" for category in CATEGORIES}
#: The mixed task of a message whose under-filled batches come from several categories
#: (BRIDGE_MIX_CATEGORIES): the bridge sends it on the queue of the category with most
#: events in it, so a worker of any category queue may run it.
EVENTS_MIXED_TASK = "events.mixed"
#: Every mixed task: each item is parsed for its own type, and the result is by type.
MIXED_TASK_NAMES: frozenset[str] = frozenset({*MIXED_TASKS.values(), EVENTS_MIXED_TASK})
assert not MIXED_TASK_NAMES & set(REGISTRY), "a mixed task is named like an event type"

#: Recomputes one tenant's rollups for one day (what a backfill sends, per day and tenant).
ROLLUP_DAY_TASK = "rollups.day"
#: Beat: recompute the days that received events, and the recent window.
ROLLUP_REFRESH_TASK = "rollups.refresh"
#: Beat, after midnight UTC: recompute the day that just ended.
ROLLUP_CLOSE_DAY_TASK = "rollups.close_day"
#: Beat, every WAREHOUSE_INTERVAL: copy newly stored events to the warehouse.
WAREHOUSE_DELIVER_TASK = "warehouse.deliver"
#: Beat: create the coming months' partitions of the raw store (PostgreSQL).
RETENTION_PARTITIONS_TASK = "retention.partitions"
#: Beat, with RAW_RETENTION_DAYS set: drop raw events and dead letters past the horizon.
RETENTION_PRUNE_TASK = "retention.prune"

#: Ingestion task name -> queue.
INGEST_ROUTES: dict[str, str] = {
    **{name: spec.category for name, spec in REGISTRY.items()},
    **{name: category for category, name in MIXED_TASKS.items()},
    # The bridge always names its queue (see EVENTS_MIXED_TASK); sent without one, it
    # goes where every worker looks by default.
    EVENTS_MIXED_TASK: MISC_QUEUE,
    UNKNOWN_EVENT_TASK: MISC_QUEUE,
    DEADLETTER_TASK: DEADLETTER_QUEUE,
}
#: Task name -> queue, for every task the workers run.
ROUTES: dict[str, str] = {
    **INGEST_ROUTES,
    ROLLUP_DAY_TASK: ROLLUPS_QUEUE,
    ROLLUP_REFRESH_TASK: ROLLUPS_QUEUE,
    ROLLUP_CLOSE_DAY_TASK: ROLLUPS_QUEUE,
    WAREHOUSE_DELIVER_TASK: WAREHOUSE_QUEUE,
    # Maintenance of the raw store: slow and rare, like the rollups, off the event queues.
    RETENTION_PARTITIONS_TASK: ROLLUPS_QUEUE,
    RETENTION_PRUNE_TASK: ROLLUPS_QUEUE,
}


def route_for(event_type: str) -> tuple[str, str]:
    """The ``(task name, queue)`` that ingests events of this type."""
    spec = REGISTRY.get(event_type)
    if spec is None:
        return UNKNOWN_EVENT_TASK, MISC_QUEUE
    return spec.name, spec.category
