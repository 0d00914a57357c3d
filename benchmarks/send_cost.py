"""The bridge's CPU to hand one batch to Celery, without reading pub/sub or running a worker.

    python -m benchmarks.send_cost [--sends N] [--events N] [--rounds N] [--redis-db N]

Sends ``--sends`` batches of ``--events`` events through :class:`tasks.sender.CelerySender`
(the delivery ledger, the Celery message, its compression, the broker's LPUSH) to a
queue of its own in Redis DB ``--redis-db``, with a real Celery app whose result backend
is that Redis, and prints the process's CPU time and the wall time per send for each
round. The first round warms up; compare the later ones. The queue and the ledger's keys
are deleted afterwards (the whole DB is flushed: give it one nobody else uses).
"""

from __future__ import annotations

import argparse
import time

import redis

from analytics.config import Settings
from benchmarks.claim import claim
from tasks.app import make_app
from tasks.sender import CelerySender

QUEUE = "send_cost"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=500, help="batches a round (default 500)")
    parser.add_argument("--events", type=int, default=70, help="events a batch (default 70)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--redis-db", type=int, default=10, help="Redis DB to use and flush (default 10)"
    )
    parser.add_argument("--redis-host", default="127.0.0.1:6379", help="host:port")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"redis://{args.redis_host}/{args.redis_db}"
    settings = Settings(redis_url=url, celery_broker_url=url, celery_result_backend=url)
    app = make_app(settings)
    client = redis.Redis.from_url(url)
    claim(client, "benchmarks.send_cost")
    items = [
        ["events:order:created", f'{{"event_type": "order.created", "n": {n}}}', 1.5]
        for n in range(args.events)
    ]
    try:
        sender = CelerySender(app, settings)
        for round_ in range(1, args.rounds + 1):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.sends):
                sender("order.created", QUEUE, items)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"round {round_}: {1000 * cpu / args.sends:.3f} ms CPU a send, "
                f"{1000 * wall / args.sends:.3f} ms wall ({args.sends} batches of {args.events})"
            )
            client.delete(QUEUE)
    finally:
        client.flushdb()  # the claim with it
        client.close()
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
