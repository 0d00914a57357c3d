"""What recomputing a batch's stock alerts costs as the products' histories grow.

    python -m benchmarks.stock_history [--products N] [--history N N ...] [--keys N]

A batch that carries a product's ``low_stock``, ``out_of_stock`` or ``restocked``
recomputes that product's stock alerts (``analytics.ingest.alerts``). This grows
``--products`` products' movement histories to each ``--history`` size in turn (a
restock every six movements, the others low and out of stock and adjustments;
written with SQL, their alerts computed once), then times batches that each append
one new movement to ``--keys`` of the products and recompute their alerts:

- from the last restock before the batch (what the writer does), and
- over the whole history (what it did before, and still does for a product never
  restocked): the same call, told that the batch starts before every movement.

For each it prints the mean CPU milliseconds a batch, the worker's Python and
the PostgreSQL backend's (read from /proc, so run it on the database's host), and
checks that the stored alerts equal those recomputed from every movement.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from analytics.db import make_engine, session_factory
from analytics.ingest.alerts import (
    MOVEMENT_COLUMNS,
    STOCK_ALERT_COLUMNS,
    StockKey,
    apply_stock_alerts,
    stock_alert_history,
)
from analytics.models import Alert, InventoryMovement
from benchmarks import procs
from benchmarks.scratch import scratch_database

TENANT = "bench"
START = datetime(2020, 1, 1)
#: Told as a batch's first movement, before every other: the whole history is read.
EVER = datetime(1, 1, 1)
#: One movement a product a minute, in this order: a restock every six.
CYCLE = ("low_stock", "adjusted", "out_of_stock", "adjusted", "restocked", "adjusted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument(
        "--history",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 50_000],
        help="movements a product, at each of which the batches are timed",
    )
    parser.add_argument("--keys", type=int, default=8, help="products a batch touches")
    parser.add_argument("--batches", type=int, default=40, help="batches timed a way")
    args = parser.parse_args(argv)
    if args.keys > args.products:
        parser.error("--keys cannot exceed --products")
    with scratch_database("stock_history") as url:
        engine = make_engine(url)
        try:
            return _measure(args, session_factory(engine))
        finally:
            engine.dispose()


def _measure(args: argparse.Namespace, sessions: Any) -> int:
    rng = random.Random(1)
    products = [f"p{n:03d}" for n in range(args.products)]
    keys: list[StockKey] = [(TENANT, product, "l1") for product in products]
    grown = 0
    clock = START  # the next new movement's time
    exact = True
    print(
        f"stock alerts: {args.products} products, batches touching {args.keys}; "
        "mean CPU ms a batch (python + postgres)"
    )
    for size in args.history:
        if size > grown:
            started = time.perf_counter()
            with sessions.begin() as session:
                _grow(session, args.products, grown, size)
                apply_stock_alerts(session, dict.fromkeys(keys, START + timedelta(minutes=grown)))
            grown = size
            clock = max(clock, START + timedelta(minutes=size))
            print(f"  history grown to {size:,} movements a product in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        figures = {}
        for way, batches in (("since restock", args.batches), ("whole", max(3, args.batches // 4))):
            runs = []
            for _ in range(batches):
                clock += timedelta(seconds=1)
                touched = rng.sample(keys, args.keys)
                runs.append(_batch(sessions, touched, clock, rng, whole=way == "whole"))
            # /proc counts in ticks of 10 ms: a mean over the batches, not a median.
            python = statistics.fmean(run[0] for run in runs) * 1e3
            postgres = statistics.fmean(run[1] for run in runs) * 1e3
            figures[way] = (python, postgres)
        with sessions.begin() as session:
            same = _alerts_are_exact(session, keys)
        exact = exact and same
        line = "; ".join(
            f"{way} {p + q:6.2f} ms (python {p:.2f}, postgres {q:.2f})"
            for way, (p, q) in figures.items()
        )
        print(f"  {size:>9,} movements a product: {line}; {'exact' if same else 'NOT EXACT'}")
    return 0 if exact else 1


def _grow(session: Session, products: int, first: int, end: int) -> None:
    """Append minutes ``[first, end)`` of every product's movements, with SQL."""
    kinds = ", ".join(f"'{kind}'" for kind in CYCLE)
    session.execute(
        text(
            "INSERT INTO inventory_movements (tenant_id, event_id, product_id, location_id, "
            " kind, occurred_at, quantity_after, alert_message) "
            "SELECT :tenant, 'h-' || p || '-' || i, 'p' || lpad(p::text, 3, '0'), 'l1', "
            f" (ARRAY[{kinds}])[1 + i % {len(CYCLE)}], :start + i * interval '1 minute', "
            " i % 7, 'alert ' || i "
            "FROM generate_series(0, :products - 1) AS p, generate_series(:first, :end - 1) AS i"
        ),
        {"tenant": TENANT, "start": START, "products": products, "first": first, "end": end},
    )


def _batch(
    sessions: Any, keys: list[StockKey], at: datetime, rng: random.Random, whole: bool
) -> tuple[float, float]:
    """Append a movement to each key at ``at`` and recompute; (python, postgres) CPU seconds."""
    with sessions.begin() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        session.add_all(
            InventoryMovement(
                tenant_id=tenant,
                event_id=f"b-{at:%Y%m%d%H%M%S}-{product}",
                product_id=product,
                location_id=location,
                kind=rng.choice(("low_stock", "out_of_stock", "restocked")),
                occurred_at=at,
                quantity_after=1,
                alert_message="alert",
            )
            for tenant, product, location in keys
        )
        session.flush()
        firsts = dict.fromkeys(keys, EVER if whole else at)
        cpu, backend = time.process_time(), procs.cpu_seconds([pid])
        apply_stock_alerts(session, firsts)
        session.flush()
        return time.process_time() - cpu, procs.cpu_seconds([pid]) - backend


def _alerts_are_exact(session: Session, keys: list[StockKey]) -> bool:
    """Whether the stored alerts equal those computed from every movement of ``keys``."""
    move = InventoryMovement
    history: dict[StockKey, list[Any]] = {key: [] for key in keys}
    for row in session.execute(
        select(*(getattr(move, name) for name in MOVEMENT_COLUMNS)).where(move.tenant_id == TENANT)
    ):
        history[row.tenant_id, row.product_id, row.location_id].append(row)
    columns = ("alert_key", "event_id", *STOCK_ALERT_COLUMNS)
    wanted = sorted(
        tuple(alert[name] for name in columns)
        for key, movements in history.items()
        for alert in stock_alert_history(key, movements)
    )
    stored = sorted(
        tuple(row)
        for row in session.execute(
            select(*(getattr(Alert, name) for name in columns)).where(Alert.tenant_id == TENANT)
        )
    )
    return stored == wanted


if __name__ == "__main__":
    raise SystemExit(main())
