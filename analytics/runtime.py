"""The Python runtime of the long-running processes (workers, the bridge): its collector.

CPython's cyclic garbage collector scans every tracked object on a full (oldest
generation) collection, and a worker's heap is mostly what it imported at start:
Celery, SQLAlchemy's metadata, the schemas, ~130,000-160,000 objects that live as
long as the process. A full collection came about every ten young ones, and each
walked that whole heap again: 0.71 s of a 2.7 s run of ``benchmarks.worker_cost``
(26% of the worker's own CPU) went to them. :func:`freeze_startup_objects` moves
everything alive once the process is set up to the collector's permanent
generation, which collections skip (``gc.freeze``): the same run spent 0.03 s in
them. Objects created afterwards are collected as before; what the frozen ones
hold is never freed, and they were never going to be.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects(what: str) -> int:
    """Collect once, then exempt every object alive now from later collections.

    Call it when a process is set up and before its work begins (a worker's pool
    process after it forked, the bridge before it reads). Returns how many objects
    were frozen, and logs it at DEBUG.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%s: %d objects exempted from garbage collection (gc.freeze)", what, frozen)
    return frozen
