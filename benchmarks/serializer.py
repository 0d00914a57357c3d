"""What a batch's JSON costs, per event: kombu's writer and reader against the batches' own.

    python -m benchmarks.serializer [--events N] [--batch N] [--repeat N]

A batch travels as the JSON body of a Celery message (tasks.serializer). The bridge
writes it once; a worker reads it twice (its main process, to tell Celery's message
protocol, then the pool process that runs it). This builds the benchmark's realistic
stream (all 15 types, 3 tenants), groups it by event type into batches of ``--batch``
as the bridge does, wraps each in the body Celery sends, and prints CPU microseconds
an event to write and to read it: with kombu's ``json`` (what the bridge and the
workers used before) and with ``tasks.serializer`` (what they use now). Both must
read back the same batch, and kombu's reader (an older worker's) must read the new
text too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from kombu.utils import json as kombu_json

from benchmarks.worker_cost import batches_of
from loadgen import publishing
from tasks import serializer

#: What Celery's message protocol 2 puts after a task's arguments.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def per_event(work: Callable[[], Any], events: int, repeat: int) -> float:
    """CPU microseconds an event of ``work`` (over the whole stream), the best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best / events * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events (default 20,000)")
    parser.add_argument("--batch", type=int, default=400, help="events a batch (default 400)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept (5)")
    args = parser.parse_args(argv)

    stream = publishing.build_stream(
        publishing.simulate(args.events, seed=1), channel_prefix="events"
    )
    bodies = [[[batch], {}, EMBED] for batch in batches_of(stream, args.batch)]
    events = len(stream)
    old = [kombu_json.dumps(body).encode() for body in bodies]
    new = [serializer.dumps(body) for body in bodies]
    for body, old_text, new_text in zip(bodies, old, new, strict=True):
        assert kombu_json.loads(old_text) == serializer.loads(new_text) == body
        assert kombu_json.loads(new_text) == body, "an older worker must read the new text"

    figures = {
        "write (bridge)": (
            per_event(lambda: [kombu_json.dumps(b) for b in bodies], events, args.repeat),
            per_event(lambda: [serializer.dumps(b) for b in bodies], events, args.repeat),
        ),
        "read (each of the worker's two reads)": (
            per_event(lambda: [kombu_json.loads(t) for t in old], events, args.repeat),
            per_event(lambda: [serializer.loads(t) for t in new], events, args.repeat),
        ),
    }
    size = sum(map(len, new)) / events
    print(
        f"{events:,} events in {len(bodies)} batches of up to {args.batch} (by type), "
        f"{size:.0f} bytes of JSON an event; CPU us an event, best of {args.repeat}"
    )
    print(f"  {'':40} {'kombu json':>11} {'batch json':>11}")
    for name, (before, after) in figures.items():
        print(f"  {name:40} {before:11.2f} {after:11.2f}")
    (write_old, write_new), (read_old, read_new) = figures.values()
    print(
        f"  {'a batch: one write and two reads':40} {write_old + 2 * read_old:11.2f} "
        f"{write_new + 2 * read_new:11.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
