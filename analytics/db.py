"""Database access: one engine per process, sessions, and the one place dialects differ.

PostgreSQL is the production store; a SQLite file is the zero-setup default. The
only SQL that differs between them is ``INSERT ... ON CONFLICT``, built by
:func:`insert_for` and nowhere else, and :func:`one_at_a_time`'s lock.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from analytics.config import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def make_engine(url: str) -> Engine:
    """An engine configured for concurrent writers on either dialect."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, json_serializer=_json)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
            # Let pysqlite's own transaction handling stand aside so that every
            # transaction starts with BEGIN IMMEDIATE (below): a deferred
            # transaction that later writes fails at once with "database is
            # locked" when another process wrote in between.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=2, max_overflow=2, json_serializer=_json
    )


def _json(value: Any) -> str:
    # orjson: ~10x faster than the json module on event payloads, same output.
    return orjson.dumps(value).decode()


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: ``DATABASE_URL``), created on first use."""
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Forget pooled connections inherited from a parent process (call after fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


def one_at_a_time(session: Session, name: str) -> None:
    """Hold ``name`` until this transaction ends: transactions that ask for it run in turn.

    For work that reads what it will replace (delete, then insert what it
    computed): a second transaction doing the same work concurrently would not
    see the first one's rows and would write them again. PostgreSQL: an advisory
    lock on the name's 64-bit hash. SQLite: nothing, since every transaction there
    begins with BEGIN IMMEDIATE and write transactions already run one at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))


def insert_for(session: Session) -> Callable[[Any], Any]:
    """The dialect's ``insert`` (with ``on_conflict_do_update`` and ``excluded``) for a model.

    The statement targets the model's Table, not the mapped class: a list of rows
    then runs as Core "insertmanyvalues" (a few multi-row INSERTs), not through the
    ORM's bulk path, which issues a statement per group of rows (measured: 5x slower).
    """
    name = session.get_bind().dialect.name
    construct: Callable[[Any], Any]
    if name == "postgresql":
        construct = postgresql.insert
    elif name == "sqlite":
        construct = sqlite.insert
    else:
        raise NotImplementedError(f"unsupported database {name!r}: use PostgreSQL or SQLite")

    def insert(model: Any) -> Any:
        return construct(getattr(model, "__table__", model))

    return insert


_statements: dict[tuple[str, Hashable], Any] = {}
Build = Callable[[Callable[[Any], Any]], Any]


def statement(session: Session, key: Hashable, build: Build) -> Any:
    """``build(insert_for(session))``, built once per dialect and process.

    Building an upsert's SET clause costs ~0.7 ms, paid by every batch until cached;
    with small batches that was most of a task's fixed cost (measured).
    """
    dialect = session.get_bind().dialect.name
    stmt = _statements.get((dialect, key))
    if stmt is None:
        stmt = _statements[(dialect, key)] = build(insert_for(session))
    return stmt


def upsert_many(session: Session, key: Hashable, build: Build, rows: list[dict[str, Any]]) -> None:
    """Run ``INSERT ... ON CONFLICT`` for many rows as a few multi-row statements.

    SQLAlchemy batches an executemany INSERT into multi-row VALUES ("insertmanyvalues")
    only when it has RETURNING once an ON CONFLICT clause is present; without it,
    psycopg2 runs one statement per row (measured: 220 us/row, against 30 us/row
    batched). Returning the first primary-key column costs next to nothing.
    """
    if not rows:
        return

    def with_returning(insert: Callable[[Any], Any]) -> Any:
        stmt = build(insert)
        return stmt.returning(next(iter(stmt.table.primary_key.columns)))

    session.execute(statement(session, ("upsert", key), with_returning), rows).all()


#: Below this many rows, COPY's extra round trips cost more than they save.
COPY_MIN_ROWS = 50


def insert_new(
    session: Session, table: Table, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> set[tuple[Any, ...]]:
    """Insert rows unless their ``key`` exists; return the keys that were inserted.

    On PostgreSQL the rows go through COPY into a per-connection temporary table
    and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: measured 43 against
    70 us a row for a multi-row INSERT of 700-byte events (more than half of a
    batch's database time is this one statement).
    """
    if not rows:
        return set()
    if session.get_bind().dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        stmt = statement(
            session,
            ("insert-new", table.name, key),
            lambda insert: (
                insert(table)
                .on_conflict_do_nothing(index_elements=list(key))
                .returning(*(table.c[name] for name in key))
            ),
        )
        return {tuple(row) for row in session.execute(stmt, rows)}
    columns = [column for column in table.columns if column.name in rows[0]]
    names = ", ".join(column.name for column in columns)
    staging = f"staging_{table.name}"
    connection = session.connection()
    # A temporary table lives as long as the connection, its rows one transaction.
    # Created on every call (a catalog lookup when it exists): a flag kept per
    # connection would lie after a rolled-back creation. Column types only, no
    # defaults, so it depends on nothing of the real table.
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS "
        f"AS SELECT {names} FROM {table.name} WITH NO DATA"
    )
    fields = [(column.name, _copy_formatter(column)) for column in columns]
    buffer = io.StringIO(
        "".join(
            "\t".join("\\N" if (v := row[name]) is None else fmt(v) for name, fmt in fields) + "\n"
            for row in rows
        )
    )
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {staging} ({names}) FROM STDIN", buffer)
    finally:
        cursor.close()
    keys = ", ".join(key)
    result = connection.exec_driver_sql(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {staging} "
        f"ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}"
    )
    return {tuple(row) for row in result}


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_formatter(column: Any) -> Callable[[Any], str]:
    """How a column's non-null values are written in COPY's text format.

    Chosen once per column, not per value: the per-value type tests cost ~40 us an
    event (profile). Backslash, tab, newline and carriage return are escaped.
    """
    python_type = column.type.python_type if not isinstance(column.type, JSON) else dict
    if python_type is dict:
        return lambda value: _json(value).translate(_COPY_ESCAPES)
    if python_type is bool:
        return lambda value: "t" if value else "f"
    if python_type is datetime:
        return lambda value: value.isoformat(sep=" ")
    if python_type is str:
        return lambda value: value.translate(_COPY_ESCAPES)
    return lambda value: str(value).translate(_COPY_ESCAPES)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed: lost connections, deadlocks, a locked SQLite file."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
