"""What a statement costs the worker's Python, through SQLAlchemy and on the driver's cursor.

    python -m benchmarks.statement_cost [--statements N] [--rows N ...]

The writer sends a few statements a batch as driver SQL (the advisory locks, the
prepared statements' EXECUTEs, the staging tables, the look-ups of stored days and
currencies). This runs one such statement (rows from ``unnest`` of an array) ``--statements``
times in one transaction both ways, interleaved, and prints the process's CPU
microseconds a statement: ``Connection.exec_driver_sql`` with its rows read (what the writer
did before) and ``analytics.db.driver_rows`` (what it does now). Both must return the same
rows. The CPU includes the driver's own and the kernel's for the round trip, not the
server's.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy.orm import Session

from analytics.db import driver_rows, make_engine
from benchmarks.scratch import ADMIN_URL

SQL = "SELECT x, x + 1 FROM unnest(%s::int[]) AS u(x)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000, help="a way a round (3,000)")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1, 20], help="rows a statement returns (1 20)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both ways (2)")
    parser.add_argument("--url", default=ADMIN_URL, help="a PostgreSQL database (any)")
    args = parser.parse_args(argv)
    engine = make_engine(args.url)
    try:
        print(f"CPU us a statement (best of {args.rounds} rounds of {args.statements:,})")
        print(f"  {'rows':>4} {'exec_driver_sql':>16} {'driver_rows':>12}")
        for rows in args.rows:
            params = (list(range(rows)),)
            best = {"exec_driver_sql": float("inf"), "driver_rows": float("inf")}
            with Session(engine) as session, session.begin():
                connection = session.connection()
                expected = [tuple(row) for row in connection.exec_driver_sql(SQL, params)]
                assert list(driver_rows(connection, SQL, params)) == expected
                for _ in range(args.rounds):
                    for way in best:
                        started = time.process_time()
                        for _ in range(args.statements):
                            if way == "exec_driver_sql":
                                list(connection.exec_driver_sql(SQL, params))
                            else:
                                driver_rows(connection, SQL, params)
                        spent = (time.process_time() - started) / args.statements * 1e6
                        best[way] = min(best[way], spent)
            print(f"  {rows:>4} {best['exec_driver_sql']:>16.1f} {best['driver_rows']:>12.1f}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
