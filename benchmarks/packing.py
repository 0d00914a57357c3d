"""What a batch costs each process on its way: its items as JSON (version 1) or packed (2).

    python -m benchmarks.packing [--events N] [--batch N] [--mixed] [--repeat N]

A batch goes from the bridge to a worker's main process, which decodes the message to
build Celery's request and pipes it to a pool process, which decodes it again and
runs it (analytics.batch). This builds the benchmark's realistic stream (all 15
types, 3 tenants), groups it into batches of ``--batch`` as the bridge does (by type,
or every type together with ``--mixed``, as its mixed tasks carry a quiet stream),
and prints CPU microseconds an event each process spends on it, both ways:

- the bridge: the delivery ledger's entry (orjson, zstd), the message body
  (tasks.serializer) and the transport's zstd, with ``analytics.batch.pack`` first
  for version 2;
- the worker's main process: the transport's zstd undone and the body read;
- the pipe to the pool process: bytes an event (billiard writes them, the pool reads them);
- the pool process: the body read again, and unpacked for version 2.

Both ways must give the pool process the same items.
"""

from __future__ import annotations

import argparse
from typing import Any

from kombu import compression

from analytics.batch import new_compressor, pack, unpack
from benchmarks.serializer import EMBED, per_event
from benchmarks.worker_cost import batches_of
from loadgen import publishing
from tasks import serializer
from tasks.app import BATCH_COMPRESSION
from tasks.ledger import write_entry


class Way:
    """One way of sending the batches: what each process does with them."""

    def __init__(self, batches: list[list[list[Any]]], packed: bool):
        self.batches = batches
        self.packed = packed
        self.ledger = new_compressor()  # the ledger keeps one
        self.messages = self.bridge()
        self.bodies = self.main()

    def bridge(self) -> list[bytes]:
        messages = []
        for items in self.batches:
            args = pack(items) if self.packed else items
            write_entry(self.ledger, "order.created", "order", args)
            body = serializer.dumps([[args], {}, EMBED])
            if isinstance(body, str):  # pragma: no cover - orjson writes bytes
                body = body.encode()
            messages.append(compression.compress(body, BATCH_COMPRESSION)[0])
        return messages

    def main(self) -> list[bytes]:
        bodies = []
        for message in self.messages:
            body = compression.decompress(message, "application/zstd")
            serializer.loads(body)  # Celery's request needs the arguments
            bodies.append(body)
        return bodies

    def pool(self) -> list[Any]:
        return [unpack(serializer.loads(body)[0][0]) for body in self.bodies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events (default 20,000)")
    parser.add_argument("--batch", type=int, default=400, help="events a batch (default 400)")
    parser.add_argument("--mixed", action="store_true", help="every type together in arrival order")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept (5)")
    args = parser.parse_args(argv)

    stream = publishing.build_stream(
        publishing.simulate(args.events, seed=1), channel_prefix="events"
    )
    batches = batches_of(stream, args.batch, args.mixed)
    events = len(stream)
    old, new = Way(batches, packed=False), Way(batches, packed=True)
    assert old.pool() == new.pool() == batches, "both ways must hand the pool the same items"

    figures = {
        name: (
            per_event(getattr(old, name), events, args.repeat),
            per_event(getattr(new, name), events, args.repeat),
        )
        for name in ("bridge", "main", "pool")
    }
    shape = "every type together" if args.mixed else "by type"
    print(
        f"{events:,} events in {len(batches)} batches of up to {args.batch} ({shape}); "
        f"CPU us an event, best of {args.repeat}"
    )
    print(f"  {'':32} {'items (v1)':>11} {'packed (v2)':>11}")
    labels = {
        "bridge": "bridge (ledger, body, zstd)",
        "main": "worker's main process",
        "pool": "pool process",
    }
    for name, (before, after) in figures.items():
        print(f"  {labels[name]:32} {before:11.2f} {after:11.2f}")
    print(
        f"  {'in all':32} {sum(b for b, _ in figures.values()):11.2f} "
        f"{sum(a for _, a in figures.values()):11.2f}"
    )
    piped = [sum(map(len, way.bodies)) / events for way in (old, new)]
    print(f"  {'piped to the pool, bytes an event':32} {piped[0]:11.0f} {piped[1]:11.0f}")
    stored = [sum(map(len, way.messages)) / events for way in (old, new)]
    print(f"  {'in Redis (compressed), bytes':32} {stored[0]:11.0f} {stored[1]:11.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
