"""What a connection's ``ON COMMIT DELETE ROWS`` staging tables cost PostgreSQL at each commit.

    python -m benchmarks.staging_cost [--tables N ...] [--commits N] [--rounds N]

The writer COPYs a large batch's rows into a temporary twin of their table
(``analytics.db.copy_to_staging``), created ``ON COMMIT DELETE ROWS`` and kept for the
connection's life. At the commit of any transaction that touched a temporary table,
PostgreSQL empties every such table the connection holds, used or not. This opens a
connection with ``--tables`` such tables and commits ``--commits`` transactions that
each write one row to the first of them (or, with none, to a plain temporary table),
the counts interleaved and their order alternating from round to round, and prints the
PostgreSQL backend's CPU microseconds a commit (from /proc: run it on the database's host).
"""

from __future__ import annotations

import argparse

import psycopg2

from benchmarks import procs
from benchmarks.scratch import ADMIN_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tables",
        type=int,
        nargs="+",
        default=[0, 1, 4, 10],
        help="ON COMMIT DELETE ROWS tables on the connection (0 1 4 10)",
    )
    parser.add_argument("--commits", type=int, default=2_000, help="commits a count a round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every count (2)")
    parser.add_argument("--url", default=ADMIN_URL, help="a PostgreSQL database (any)")
    args = parser.parse_args(argv)
    url = args.url.replace("postgresql+psycopg2://", "postgresql://")
    best = {count: float("inf") for count in args.tables}
    for round_ in range(args.rounds):
        for count in args.tables if round_ % 2 == 0 else list(reversed(args.tables)):
            best[count] = min(best[count], _per_commit(url, count, args.commits))
    print(f"PostgreSQL CPU us a commit (best of {args.rounds} rounds of {args.commits:,})")
    print(f"  {'tables':>6} {'us':>8}")
    for count in args.tables:
        print(f"  {count:>6} {best[count]:>8.0f}")
    return 0


def _per_commit(url: str, tables: int, commits: int) -> float:
    connection = psycopg2.connect(url)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
        cursor.execute("CREATE TEMPORARY TABLE plain_rows (a int, b text)")
        for n in range(tables):
            cursor.execute(
                f"CREATE TEMPORARY TABLE staged_{n} (a int, b text) ON COMMIT DELETE ROWS"
            )
        connection.commit()
        target = "staged_0" if tables else "plain_rows"
        started = procs.cpu_seconds([pid])
        for _ in range(commits):
            cursor.execute(f"INSERT INTO {target} VALUES (1, 'x')")
            connection.commit()
        return (procs.cpu_seconds([pid]) - started) / commits * 1e6
    finally:
        connection.close()


if __name__ == "__main__":
    raise SystemExit(main())
