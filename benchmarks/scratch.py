"""A PostgreSQL database of a benchmark's own: created, migrated, and dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from analytics.migrations import run_migrations

#: Where benchmarks CREATE and DROP their databases.
ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def scratch_database(prefix: str, keep: bool = False) -> Iterator[str]:
    """The URL of a new database migrated to head; dropped (its sessions ended) on exit.

    With ``keep`` it stays, for a look at its plans afterwards: its URL is printed.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        run_migrations(url)
        yield url
    finally:
        if keep:
            print(f"kept the database: {url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
