"""What one of the writer's per-batch reads costs PostgreSQL and the worker, three ways.

    python -m benchmarks.read_cost [--orders N] [--keys N ...] [--reads N] [--rounds N]

A writer reads by keys at most batches: the days its orders were stored on
(``report_rollups``), their currencies for refunds, the stock alerts' windows. This
stores ``--orders`` orders in a database of its own (created, migrated, dropped), then
runs the stored-days read of ``--keys`` random orders ``--reads`` times each way, the
ways interleaved and their order alternating from round to round:

- ``text``: the statement the writer sent before, as text (a join the planner chose),
  the keys as lists (``ARRAY['a', ...]``);
- ``prepared, custom``: PREPAREd once, EXECUTEd with the keys as array literals, on
  PostgreSQL's default ``plan_cache_mode`` (it plans anew at each run when the plan made
  for the values looks cheaper than the generic one);
- ``prepared, generic``: the same on the generic plan, as :func:`analytics.db.read_prepared`
  runs it now.

It prints, for each way, the PostgreSQL backend's CPU microseconds a read (from /proc:
run it on the database's host) and the benchmark process's own (the driver, the
kernel's side of the round trip, the keys' text), and checks that every way returns the
same rows.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from analytics.db import (
    Prepared,
    array_literal,
    driver_rows,
    execute_prepared,
    make_engine,
    read_prepared,
)
from analytics.report_rollups import _ORDER_CREATED
from benchmarks import procs
from benchmarks.scratch import scratch_database

WAYS = ("text", "prepared, custom", "prepared, generic")
#: The read as the writer sent it before (the keys as lists; a join the planner chose).
BEFORE = (
    "SELECT t.tenant_id, t.created_at::date FROM orders AS t "
    "JOIN unnest(%s::text[], %s::text[]) AS k(tenant_id, id) "
    "ON t.tenant_id = k.tenant_id AND t.order_id = k.id WHERE t.created_at IS NOT NULL"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=200_000, help="orders stored (200,000)")
    parser.add_argument(
        "--keys", type=int, nargs="+", default=[5, 30], help="orders a read asks for (5 30)"
    )
    parser.add_argument("--reads", type=int, default=2_000, help="reads a way a round (2,000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every way (2)")
    args = parser.parse_args(argv)
    with scratch_database("read_cost") as url:
        engine = make_engine(url)
        try:
            with Session(engine) as session, session.begin():
                _store_orders(session, args.orders)
            print(
                f"stored-days read of N random orders among {args.orders:,}; CPU us a read "
                f"(best of {args.rounds} rounds of {args.reads:,}): PostgreSQL / this process"
            )
            print(f"  {'keys':>4}  " + "  ".join(f"{way:>19}" for way in WAYS))
            for keys in args.keys:
                best = _measure(engine, args, keys)
                cells = (f"{best[way][0]:8.1f} / {best[way][1]:8.1f}" for way in WAYS)
                print(f"  {keys:>4}  " + "  ".join(f"{cell:>19}" for cell in cells))
        finally:
            engine.dispose()
    return 0


def _store_orders(session: Session, count: int) -> None:
    session.execute(
        text(
            "INSERT INTO orders (tenant_id, order_id, status, status_at, created_at, "
            "total_amount, currency, items_count) "
            "SELECT 't' || (i % 4), 'o' || i, 'created', now(), "
            "now() - make_interval(mins => i), 100, 'USD', 1 "
            "FROM generate_series(1, :count) AS i"
        ),
        {"count": count},
    )
    session.execute(text("ANALYZE orders"))


def _measure(engine: Any, args: argparse.Namespace, keys: int) -> dict[str, tuple[float, float]]:
    """Each way's best (PostgreSQL, this process) CPU us a read; a transaction a way and
    round, as ``read_prepared``'s plan cache mode holds to the end of its transaction."""
    rng = random.Random(keys)
    asked = [
        (["t" + str(n % 4) for n in picked], ["o" + str(n) for n in picked])
        for picked in (rng.sample(range(1, args.orders + 1), keys) for _ in range(args.reads))
    ]
    best = {way: (float("inf"), float("inf")) for way in WAYS}
    answers = {}
    for round_ in range(args.rounds):
        for way in WAYS if round_ % 2 == 0 else tuple(reversed(WAYS)):
            with Session(engine) as session, session.begin():
                pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                run = _way(session, way)
                answers[way] = sorted(run(*asked[0]))
                server, client = procs.cpu_seconds([pid]), time.process_time()
                for tenants, ids in asked:
                    run(tenants, ids)
                spent = (
                    (procs.cpu_seconds([pid]) - server) / args.reads * 1e6,
                    (time.process_time() - client) / args.reads * 1e6,
                )
            best[way] = min(best[way], spent)
    if len({repr(rows) for rows in answers.values()}) != 1:
        raise AssertionError(f"the ways read different rows: {answers}")
    return best


def _way(session: Session, way: str) -> Callable[[list[str], list[str]], Any]:
    sql = _ORDER_CREATED.sql()
    if way == "text":
        connection = session.connection()
        return lambda tenants, ids: driver_rows(connection, BEFORE, (tenants, ids))
    if way == "prepared, generic":
        return lambda tenants, ids: read_prepared(
            session, sql, [array_literal(tenants), array_literal(ids)]
        )
    # Under a name of its own (another text), on the default plan cache mode.
    prepared = Prepared.of(sql.replace("SELECT", "SELECT /* custom */", 1))
    return lambda tenants, ids: execute_prepared(
        session, [prepared], (array_literal(tenants), array_literal(ids))
    )


if __name__ == "__main__":
    raise SystemExit(main())
