"""Database access: one engine per process, sessions, and the one place dialects differ.

PostgreSQL is the production store; a SQLite file is the zero-setup default. The
only SQL that differs between them is ``INSERT ... ON CONFLICT``, built by
:func:`insert_for` and nowhere else, and :func:`one_at_a_time`'s lock.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import re
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    String,
    Table,
    TypeDecorator,
    create_engine,
    event,
    select,
)
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import sqltypes

from analytics.config import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def make_engine(url: str) -> Engine:
    """An engine configured for concurrent writers on either dialect.

    Neither engine puts statement parameters into its errors (``hide_parameters``).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 60}, json_serializer=_json, hide_parameters=True
        )

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
    # hide_parameters: a statement's parameters are event content (e-mail addresses
    # among them); an error must not carry them into logs, Flower or dead letters.
    engine = create_engine(
        url, pool_size=2, max_overflow=2, json_serializer=_json, hide_parameters=True
    )
    _ping_when_idle(engine)
    return engine


#: Seconds a pooled connection may sit idle and still be used without a ping first.
#: Under load a connection goes back to work within milliseconds, and a ping at every
#: checkout (``pool_pre_ping``) was a round trip per task (~3% of a worker's CPU
#: samples, besides PostgreSQL's own for the statement). A connection that sat longer
#: (a quiet night, a PostgreSQL restart, a firewall that forgot it) is pinged. The price:
#: a connection lost less than this ago fails at its next use, as an error the tasks
#: retry (``is_transient``), and the pool then replaces every connection it held.
PING_AFTER_IDLE = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection at checkout only if it sat idle in the pool past :data:`PING_AFTER_IDLE`.

    A ping that fails raises ``DisconnectionError``: the pool drops the connection and
    checks out a new one, so the caller gets a live connection and never sees the error.
    A connection just made is not pinged (its ``info``, with the time, is new).
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return
        idle = time.monotonic() - idle_since
        if idle <= PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"no answer to a ping after {idle:.0f} s idle") from exc


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


#: The session factories of the engines of :func:`get_engine`, which live as long as the
#: process does.
_factories: dict[Engine, sessionmaker[Session]] = {}


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    """Sessions of ``engine`` (default: the process's engine for ``DATABASE_URL``).

    For an engine of :func:`get_engine` the factory is made once: ``sessionmaker()``
    makes a ``Session`` subclass, whose event dispatch SQLAlchemy then sets up anew
    (~120 us of a worker's CPU a task when each task made its own). Another engine gets a
    new factory, which keeps nothing alive after its caller is done with it.
    """
    engine = engine or get_engine()
    with _lock:
        factory = _factories.get(engine)
        if factory is None:
            factory = sessionmaker(bind=engine, expire_on_commit=False)
            if any(engine is kept for kept in _engines.values()):
                _factories[engine] = factory
        return factory


def one_at_a_time(session: Session, *names: str) -> None:
    """Hold ``names`` until this transaction ends: transactions that ask for one run in turn.

    For work that reads what it will replace (delete, then insert what it
    computed): a second transaction doing the same work concurrently would not
    see the first one's rows and would write them again. PostgreSQL: an advisory
    lock on each name's 64-bit hash, all taken by one statement in sorted order,
    so that two transactions asking for overlapping sets cannot deadlock. SQLite:
    nothing, since every transaction there begins with BEGIN IMMEDIATE and write
    transactions already run one at a time.
    """
    if not names or dialect_of(session) != "postgresql":
        return
    # unnest yields the array in its order and each row's lock is taken as the row is read.
    # Sent as it is: a select built and compiled through the ORM each time cost ~3% of a
    # worker's CPU at everyday rates (py-spy), for one small statement a batch.
    driver_rows(session.connection(), _LOCK_SQL, (sorted(set(names)),))


_LOCK_SQL = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended(name, 0))) FROM unnest(%s::text[]) AS name"
)


def insert_for(session: Session) -> Callable[[Any], Any]:
    """The dialect's ``insert`` (with ``on_conflict_do_update`` and ``excluded``) for a model.

    The statement targets the model's Table, not the mapped class: a list of rows
    then runs as Core "insertmanyvalues" (a few multi-row INSERTs), not through the
    ORM's bulk path, which issues a statement per group of rows (measured: 5x slower).
    """
    name = dialect_of(session)
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
    dialect = dialect_of(session)
    stmt = _statements.get((dialect, key))
    if stmt is None:
        stmt = _statements[(dialect, key)] = build(insert_for(session))
    return stmt


def upsert_many(
    session: Session,
    key: Hashable,
    build: Build,
    rows: list[dict[str, Any]],
    order_by: Sequence[str] = (),
) -> None:
    """Run ``INSERT ... ON CONFLICT`` for many rows as few statements as the dialect allows.

    SQLAlchemy batches an executemany INSERT into multi-row VALUES ("insertmanyvalues")
    only when it has RETURNING once an ON CONFLICT clause is present; without it,
    psycopg2 runs one statement per row (measured: 220 us/row, against 30 us/row
    batched). Returning the first primary-key column costs next to nothing.

    With ``order_by`` (the conflict key) on PostgreSQL, the rows go as arrays instead
    (:class:`Writes`, :class:`Unnest`) in one ``INSERT ... SELECT ... ORDER BY key ON
    CONFLICT``: psycopg2 spends ~2 us adapting each value of a VALUES list (measured:
    83 us a row of ``orders``). The caller's rows must have unique keys and the same
    columns.
    """
    if not rows:
        return
    if order_by and dialect_of(session) == "postgresql":
        writes = Writes(session)
        writes.upsert(key, build, rows, order_by)
        writes.send()
        return
    _upsert_values(session, key, build, rows)


def _upsert_values(
    session: Session, key: Hashable, build: Build, rows: list[dict[str, Any]]
) -> None:
    """The upsert as SQLAlchemy's multi-row VALUES ("insertmanyvalues", with RETURNING)."""

    def with_returning(insert: Callable[[Any], Any]) -> Any:
        stmt = build(insert)
        return stmt.returning(next(iter(stmt.table.primary_key.columns)))

    upsert = statement(session, ("upsert", key), with_returning)
    session.execute(upsert, rows).all()


def _c_order(table: Table, source: Any, name: str) -> Any:
    """Order text by its bytes, as Python orders ``str``: every writer locks rows alike."""
    if isinstance(table.c[name].type, String):
        return source.c[name].collate("C")
    return source.c[name]


def dialect_of(session: Session) -> str:
    """The name of the database dialect ``session`` is bound to: ``postgresql`` or ``sqlite``."""
    return session.get_bind().dialect.name


def keyed_rows_sql(table: str, id_column: str, columns: Sequence[str], present: str) -> str:
    """PostgreSQL: ``columns`` (expressions, each named) of the rows of ``table`` whose
    ``(tenant_id, id_column)`` key is among two arrays (tenants, ids: two ``%s``) and whose
    ``present`` column is not null.

    One probe of the primary key a key, however young the table: a lateral subquery the
    planner may not flatten (``OFFSET 0``). As a join with ``unnest``, a table of a few
    thousand rows was read whole and hashed for a batch's ~40 keys (0.7 ms planned and
    run, against 0.3), and up to 10,000-20,000 rows for ~75 keys.
    """
    return (
        "SELECT t.* FROM unnest(%s::text[], %s::text[]) AS k(tenant_id, id) "
        f"CROSS JOIN LATERAL (SELECT {', '.join(columns)} FROM {table} AS t "
        f"WHERE t.tenant_id = k.tenant_id AND t.{id_column} = k.id "
        f"AND t.{present} IS NOT NULL OFFSET 0) AS t"
    )


def driver_rows(
    connection: Connection, sql: str, params: Sequence[Any] | None = None
) -> Sequence[Any]:
    """Run ``sql`` (the driver's ``%s`` placeholders) in ``connection``'s transaction (a
    session's: ``session.connection()``) on a cursor of its DBAPI connection itself: the
    rows of its last statement as tuples, or ``[]``.

    What ``exec_driver_sql`` does, without SQLAlchemy's execution context and result set-up
    around it: those took a fifth of a small mixed batch's writer Python (py-spy of
    ``benchmarks.worker_cost --batch 96 --mixed``), for a handful of statements a batch;
    ~30 µs of the worker's CPU a statement (``python -m benchmarks.statement_cost``).
    Kept as SQLAlchemy would: the engine's ``before_cursor_execute`` listeners see the
    statement, a driver error is raised as SQLAlchemy's (``DBAPIError.instance``: its
    ``OperationalError``, ``IntegrityError``...), and a connection the error says is lost
    is invalidated, so that the pool does not hand it out again.
    """

    def run(cursor: Any) -> Sequence[Any]:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    return on_driver_cursor(connection, sql, params, run)


def on_driver_cursor(
    connection: Connection, sql: str, params: Any, run: Callable[[Any], Any]
) -> Any:
    """``run(cursor)`` on a cursor of ``connection``'s DBAPI connection, as SQLAlchemy
    would run ``sql`` with ``params``: the engine's ``before_cursor_execute`` listeners
    see it, a driver error is raised as SQLAlchemy's, and a connection the error says is
    lost is invalidated. For :func:`driver_rows`, and for COPY, which SQLAlchemy cannot run.
    """
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        listeners = connection.dispatch.before_cursor_execute
        if listeners:
            for listener in listeners:
                listener(connection, cursor, sql, params, None, False)
        return run(cursor)
    except connection.dialect.loaded_dbapi.Error as exc:
        lost = connection.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, connection.dialect.loaded_dbapi.Error, connection_invalidated=lost
        ) from exc
    finally:
        if not cursor.closed:
            cursor.close()


#: Raw events below this many go as arrays (:class:`Unnest`, their payloads as one JSON
#: array): COPY's staging table and extra round trips cost more than they save. From
#: this many, COPY costs less (measured interleaved, batch by batch, the writer's and
#: PostgreSQL's CPU: 7-8 us an event less without COPY at 96 events, about even at 150,
#: 3 more at 200, 7 at 375; ``python -m benchmarks.raw_rows``). COPY is for raw events
#: only. Aggregates always go as arrays, with no staging table: PostgreSQL empties every
#: ``ON COMMIT DELETE ROWS`` table of a connection at each commit that touched a temporary
#: table, ~300 us of its CPU each (with the ten aggregates' staging tables a connection
#: collected, ~3 ms a commit; ``python -m benchmarks.staging_cost``).
COPY_MIN_ROWS = 150


def copy_to_staging(
    session: Session, table: Table, rows: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    """COPY ``rows`` into this connection's temporary twin of ``table``: its name and columns.

    The temporary table lives as long as the connection and its rows one
    transaction. It is created on every call (a catalog lookup when it exists): a
    flag kept per connection would lie after a rolled-back creation. Column types
    only, no defaults or constraints, so it depends on nothing of the real table.
    Values go through the column type's bind processing (``Amount`` becomes its
    integer), then COPY's text format.
    """
    columns = [column for column in table.columns if column.name in rows[0]]
    names = [column.name for column in columns]
    listed = ", ".join(names)
    staging = f"staging_{table.name}"
    connection = session.connection()
    dialect = connection.dialect
    # Emptied first, in the same round trip: a transaction that writes the same
    # table twice (a rebuild writes many batches) must not write its rows again.
    driver_rows(
        connection,
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS "
        f"AS SELECT {listed} FROM {table.name} WITH NO DATA; DELETE FROM {staging}",
    )
    line = _copy_line(tuple(names))(*(_copy_formatter(column, dialect) for column in columns))
    buffer = io.StringIO("".join(map(line, rows)))
    copy = f"COPY {staging} ({listed}) FROM STDIN"
    on_driver_cursor(connection, copy, None, lambda cursor: cursor.copy_expert(copy, buffer))
    return staging, names


def insert_once(
    session: Session, table: Table, keys: Table, rows: list[dict[str, Any]]
) -> set[tuple[str, str]]:
    """Insert the rows whose key ``keys`` does not hold yet, recording it there; return those keys.

    ``keys``' primary key is two text columns that ``table``'s rows carry too (the raw
    events' ``(tenant_id, event_id)``), and the rows must have distinct keys. A key is
    claimed by inserting it into ``keys`` (``ON CONFLICT DO NOTHING``); only the rows
    whose key was claimed go into ``table``. One index probe a row, whatever
    ``table``'s partitions (a look-up in ``table`` itself would probe each of them). A
    transaction claiming a key another has claimed but not committed waits for it at
    the index entry, then finds it taken, or takes it if the other rolled back. Keys
    are claimed in byte order, as every writer locks rows, so two never deadlock.
    """
    if not rows:
        return set()
    first, second = (column.name for column in keys.primary_key.columns)
    names = tuple(rows[0])
    listed = ", ".join(names)
    claimed = (
        f"new AS (INSERT INTO {keys.name} ({first}, {second}) "
        f"SELECT {first}, {second} FROM s "
        f'ORDER BY {first} COLLATE "C", {second} COLLATE "C" '
        f"ON CONFLICT DO NOTHING RETURNING {first}, {second}) "
        f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM s JOIN new "
        f"USING ({first}, {second}) RETURNING {first}, {second}"
    )
    if dialect_of(session) == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        staging, _ = copy_to_staging(session, table, rows)
        prepared = statement(
            session,
            ("insert-once-copy", table.name, keys.name, names),
            lambda _: Prepared.of(f"WITH s AS MATERIALIZED (SELECT * FROM {staging}), {claimed}"),
        )
        return {(a, b) for a, b in execute_prepared(session, [prepared], ())}
    if dialect_of(session) == "postgresql":
        # A few rows: as arrays (:class:`Unnest`), one statement text whatever their number.
        def build(_: Any) -> tuple[Prepared, Unnest]:
            unnest = Unnest.of(session, table, names, "u")
            return Prepared.of(f"WITH s AS (SELECT * FROM {unnest.source}), {claimed}"), unnest

        prepared, unnest = statement(session, ("insert-once", table.name, keys.name, names), build)
        result = execute_prepared(session, [prepared], unnest.params(rows))
        return {(a, b) for a, b in result}
    # SQLite: writers take turns, so the keys not yet held are claimed, then their rows added.
    pairs = sorted({(row[first], row[second]) for row in rows})
    claim = statement(
        session,
        ("claim", keys.name),
        lambda insert: (
            insert(keys).on_conflict_do_nothing().returning(keys.c[first], keys.c[second])
        ),
    )
    new = {(a, b) for a, b in session.execute(claim, [{first: a, second: b} for a, b in pairs])}
    fresh = [row for row in rows if (row[first], row[second]) in new]
    if fresh:
        session.execute(statement(session, ("insert", table.name), lambda i: i(table)), fresh)
    return new


@dataclass(frozen=True)
class Unnest:
    """Rows sent as one array parameter per column and read back as rows by ``unnest``
    (a JSON column's as one JSON array, by ``json_array_elements``).

    PostgreSQL only. The statement's text does not depend on the number of rows, and
    psycopg2 adapts a list in C: ~1 us a value, where a multi-row VALUES list built by
    SQLAlchemy's "insertmanyvalues" costs several and a compilation per batch size.
    """

    #: ``ROWS FROM (unnest(%s::type[]), ...) AS alias(columns)``, for a FROM clause.
    source: str
    #: Each column's name, its type's bind processing (``Amount`` to an integer, JSON to
    #: text) and whether it is JSON (its values sent as one JSON array).
    columns: tuple[tuple[str, Callable[[Any], Any] | None, bool], ...]

    @classmethod
    def of(cls, session: Session, table: Table, names: Sequence[str], alias: str) -> Unnest:
        dialect = session.get_bind().dialect
        missing = [c.name for c in table.columns if c.default is not None and c.name not in names]
        if missing:  # pragma: no cover - a programming error, caught by the first test
            raise ValueError(f"{table.name}: rows without {missing}, whose default unnest skips")
        types = [table.c[name].type for name in names]
        json = [isinstance(column_type, sqltypes.JSON) for column_type in types]
        # ROWS FROM zips its functions' rows in order (a multi-argument unnest is the same).
        # A JSON column's values go as one JSON document, an array read back by
        # json_array_elements: the documents' text as it is, with none of an array
        # literal's escaping of their quotes.
        functions = ", ".join(
            f"{kind.lower()}_array_elements(%s::{kind})" if is_json else f"unnest(%s::{kind}[])"
            for kind, is_json in zip(
                (column_type.compile(dialect) for column_type in types), json, strict=True
            )
        )
        return cls(
            f"ROWS FROM ({functions}) AS {alias}({', '.join(names)})",
            tuple(
                (name, column_type.dialect_impl(dialect).bind_processor(dialect), is_json)
                for name, column_type, is_json in zip(names, types, json, strict=True)
            ),
        )

    def params(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """The positional parameters of :attr:`source` for ``rows``, in its column order.

        Each column's values go as one array literal (``{"a","b",NULL}``): one string
        constant for PostgreSQL's parser, where a Python list arrives as ``ARRAY['a',
        'b', NULL]``, an expression of one constant a value that the server lexes,
        analyses and folds in every statement (the parser, analysis and planner took a
        third of PostgreSQL's CPU of a small batch; measured with perf).
        """
        return [
            _json_array([row[name] for row in rows], process)
            if is_json
            else array_literal([row[name] for row in rows])
            if process is None
            else array_literal([process(row[name]) for row in rows])
            for name, process, is_json in self.columns
        ]


def _json_array(values: list[Any], process: Callable[[Any], Any] | None) -> str:
    """One JSON array of the documents, each as the column's bind processing writes it.

    An element cannot be SQL's NULL (a Python None is JSON's ``null``, as SQLAlchemy
    writes it by default): a column whose processing returns None is refused.
    """
    texts = (
        [process(value) for value in values] if process is not None else list(map(_json, values))
    )
    if None in texts:
        raise ValueError("a JSON column sent as one JSON array cannot hold SQL NULL")
    return "[" + ",".join(texts) + "]"


_ARRAY_SPECIAL = re.compile(r'["\\]')


def _array_text(value: str) -> str:
    if _ARRAY_SPECIAL.search(value):
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def _array_element(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _array_text(value)
    if value is None:
        return "NULL"
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is Decimal:
        return str(value)
    if kind is float:
        return repr(value)
    if kind is datetime:
        return f'"{value.isoformat(" ")}"'
    if kind is date:
        return value.isoformat()
    return _array_text(str(value))


def _texts(values: Sequence[Any], nulls: bool) -> str | None:
    if not nulls:
        joined = '","'.join(values)
        # Only the separators' quotes, and no backslash: no value needs escaping.
        if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
            return None
        return '{"' + joined + '"}'
    if _ARRAY_SPECIAL.search("".join([value for value in values if value is not None])):
        return None
    return "{" + ",".join(["NULL" if value is None else f'"{value}"' for value in values]) + "}"


def _numbers(values: Sequence[Any], nulls: bool) -> str:
    if not nulls:
        return "{" + ",".join(map(str, values)) + "}"
    return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"


def _times(values: Sequence[Any], nulls: bool) -> str:
    # Each distinct time formatted once: a batch's times repeat (its hours, its days, the
    # time it is stored at), ~60% of them in a mixed batch of 96 (0.5 -> 0.3 us a value;
    # 0.5 -> 0.65 when none repeats).
    texts = {value: f'"{value.isoformat(" ")}"' for value in set(values) if value is not None}
    texts[None] = "NULL"
    return "{" + ",".join(map(texts.__getitem__, values)) + "}"


#: Whole-array forms for arrays whose values are all of one type (None aside), each value's
#: type not looked up and no function called for it (~30 values an event): the writer's
#: parameters took 25-26 us an event of a worker's ~135 in mixed batches of 96 a value at
#: a time, 17-19 whole (measured by timing :meth:`Unnest.params` in the writer).
_WHOLE: dict[type, Callable[[Sequence[Any], bool], str | None]] = {
    str: _texts,
    int: _numbers,
    Decimal: _numbers,
    datetime: _times,
}


def array_literal(values: Sequence[Any]) -> str:
    """PostgreSQL's text form of a one-dimensional array of ``values`` (cast it in SQL)."""
    kinds = set(map(type, values))
    nulls = type(None) in kinds
    if nulls:
        kinds.discard(type(None))
    if len(kinds) == 1:
        whole = _WHOLE.get(kinds.pop())
        if whole is not None and (literal := whole(values, nulls)) is not None:
            return literal
    return "{" + ",".join(map(_array_element, values)) + "}"


class Writes:
    """Writes whose results nobody reads, held and sent together: one round trip on PostgreSQL.

    On PostgreSQL each write becomes one ``INSERT ... SELECT ... FROM unnest(...)``
    (:class:`Unnest`), however many its rows, and :meth:`send` sends them all in one
    string, run in order, with the read that needs them last (its rows are what the
    round trip returns). Locks (:meth:`lock`) and statements given as text
    (:meth:`text`) are held the same way. On SQLite a write runs at once, as
    :func:`upsert_many` runs it, and nothing is held. Whoever reads what was written
    sends it first, or with the read.
    """

    #: The name the held statements give their rows (in their ``ORDER BY``).
    ALIAS = "unnest_rows"

    def __init__(self, session: Session):
        self.session = session
        self._hold_writes = dialect_of(session) == "postgresql"
        self._held: list[Prepared | str] = []
        self._params: list[Any] = []

    def upsert(
        self,
        key: Hashable,
        build: Build,
        rows: list[dict[str, Any]],
        order_by: Sequence[str] = (),
    ) -> None:
        """:func:`upsert_many`, held on PostgreSQL (run at once elsewhere)."""
        if not rows:
            return
        if not self._hold_writes:
            _upsert_values(self.session, key, build, rows)
            return
        self._hold(("upsert", key), build, rows, order_by)

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` into ``table`` (plain rows: no conflict expected)."""
        if not rows:
            return

        def build(insert: Callable[[Any], Any]) -> Any:
            return insert(table)

        if not self._hold_writes:
            self.session.execute(statement(self.session, ("insert", table.name), build), rows)
            return
        self._hold(("insert", table.name), build, rows, ())

    def _hold(
        self, key: Hashable, build: Build, rows: list[dict[str, Any]], order_by: Sequence[str]
    ) -> None:
        names = tuple(rows[0])

        def held(insert: Callable[[Any], Any]) -> tuple[Prepared, Unnest]:
            stmt = build(insert)
            table = stmt.table
            source = sa_table(self.ALIAS, *(sa_column(name) for name in names))
            ordered = (_c_order(table, source, name) for name in order_by)
            sql = _literal_sql(
                self.session, stmt.from_select(names, select(*source.c).order_by(*ordered))
            )
            unnest = Unnest.of(self.session, table, names, self.ALIAS)
            plain = f"FROM {self.ALIAS}"
            assert sql.count(plain) == 1, sql
            return Prepared.of(sql.replace(plain, f"FROM {unnest.source}")), unnest

        prepared, unnest = statement(self.session, ("held", key, names, tuple(order_by)), held)
        self._held.append(prepared)
        self._params.extend(unnest.params(rows))

    def lock(self, *names: str) -> None:
        """:func:`one_at_a_time`'s locks, held: taken when sent, after what was held before."""
        if not names or not self._hold_writes:
            return  # SQLite: nothing to take (see one_at_a_time)
        self._held.append(_LOCK)
        self._params.append(sorted(set(names)))

    def text(self, sql: str, params: Sequence[Any]) -> None:
        """Hold a statement given as PostgreSQL's text (psycopg2's ``%s`` placeholders),
        sent as it is and so planned at each run. PostgreSQL only."""
        assert self._hold_writes, "statements as text are PostgreSQL's"
        self._held.append(sql)
        self._params.extend(params)

    def send(self, read: tuple[str, Sequence[Any]] | None = None) -> Sequence[Any]:
        """Send every held statement, in the order they were held, then ``read`` (text and
        its parameters, PostgreSQL only), in the same round trip: the read's rows."""
        if read is not None:
            assert self._hold_writes, "a read sent with the writes is PostgreSQL's"
            self._held.append(read[0])
            self._params.extend(read[1])
        if not self._held:
            return []
        held, params = self._held, tuple(self._params)
        self._held, self._params = [], []
        return execute_prepared(self.session, held, params)


_PLACEHOLDER = re.compile(r"(?<!%)%s")


def _literal_sql(session: Session, stmt: Any) -> str:
    """``stmt``'s SQL with its constants written in (no bound parameters)."""
    return str(
        stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    )


@dataclass(frozen=True)
class Prepared:
    """A statement PREPAREd once per connection and then EXECUTEd by name (PostgreSQL).

    ``sql`` has psycopg2's ``%s`` placeholders; ``body`` numbers them ``$1, $2, ...``
    for ``PREPARE``. The name is the text's hash: the same text, the same name, in
    every process.
    """

    name: str
    sql: str
    body: str
    arity: int

    @classmethod
    def of(cls, sql: str) -> Prepared:
        count = itertools.count(1)
        body = _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)
        arity = next(count) - 1
        # Without parameters psycopg2 sends the text as it is, where "%%" stands for "%".
        assert arity or "%" not in sql, sql
        name = "analytics_" + hashlib.sha1(sql.encode()).hexdigest()[:24]
        return cls(name, sql, body, arity)


#: :func:`one_at_a_time`'s statement, held by :meth:`Writes.lock` (no table: its plan is one).
_LOCK = Prepared.of(_LOCK_SQL)


@dataclass
class _PreparedOn:
    """What one connection has PREPAREd; ``uncertain`` after a failed send."""

    names: set[str] = field(default_factory=set)
    uncertain: bool = False


def execute_prepared(
    session: Session, statements: Sequence[Prepared | str], params: Sequence[Any]
) -> Any:
    """Run ``statements`` in one round trip, each PREPAREd first on this connection if new
    (one given as a string is sent as it is); the rows of the last.

    A prepared statement is parsed, analysed and planned once per connection, not
    per batch (a third of PostgreSQL's CPU of a small batch; measured with perf).
    PREPARE is not undone by a rollback, and a failed round trip may have prepared
    some of its statements and not others: after one, the next round trip starts
    with ``DEALLOCATE ALL`` and prepares again what it uses. ``DATABASE_PREPARE=0``
    sends the statements' text instead (behind a pooler that moves a session's
    transactions between server connections, as PgBouncer's transaction mode does).
    """
    connection = session.connection()
    if not get_settings().database_prepare:
        sql = "; ".join(
            prepared.sql if isinstance(prepared, Prepared) else prepared for prepared in statements
        )
        return driver_rows(connection, sql, tuple(params) if params else None)
    info = connection.connection.info
    state = info.get("analytics_prepared")
    if state is None:
        state = info["analytics_prepared"] = _PreparedOn()
    parts: list[str] = []
    if state.uncertain:
        parts.append("DEALLOCATE ALL")
        state.names.clear()
    new: set[str] = set()
    for prepared in statements:
        if not isinstance(prepared, Prepared):
            parts.append(prepared)
            continue
        if prepared.name not in state.names and prepared.name not in new:
            parts.append(f"PREPARE {prepared.name} AS {prepared.body}")
            new.add(prepared.name)
        arguments = f"({', '.join(['%s'] * prepared.arity)})" if prepared.arity else ""
        parts.append(f"EXECUTE {prepared.name}{arguments}")
    try:
        result = driver_rows(connection, "; ".join(parts), tuple(params) if params else None)
    except BaseException:
        state.uncertain = True
        raise
    state.uncertain = False
    state.names |= new
    return result


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_text(value: str) -> str:
    # Most values have nothing to escape; finding that out is a C scan, while
    # translate() looks every character up in a dict (~20 ns each: 18 us for a payload).
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


@functools.cache
def _copy_line(names: tuple[str, ...]) -> Callable[..., Callable[[dict[str, Any]], str]]:
    """A maker of the function that writes one row as a line of COPY's text format.

    Given a formatter for each of ``names`` (fresh for each COPY: they cache the batch's
    times), it returns ``line(row)``: the values tab-separated, ``\\N`` for None, ending
    in a newline. One generated expression a table instead of a generator and a join a
    row: the loop over a row's values was ~13% of a worker's CPU at full batches (py-spy).
    """
    formatters = [f"f{i}" for i in range(len(names))]
    values = "\\t".join(
        f"{{NULL if (v{i} := row[{name!r}]) is None else f{i}(v{i})}}"
        for i, name in enumerate(names)
    )
    source = (
        f"def make({', '.join(formatters)}):\n"
        f"    def line(row):\n"
        f'        return f"{values}\\n"\n'
        f"    return line\n"
    )
    env: dict[str, Any] = {"NULL": "\\N"}
    exec(compile(source, f"<copy line {','.join(names)}>", "exec"), env)
    make: Callable[..., Callable[[dict[str, Any]], str]] = env["make"]
    return make


def _copy_formatter(column: Any, dialect: Any) -> Callable[[Any], str]:
    """How a column's non-null values are written in COPY's text format.

    Chosen once per column, not per value: the per-value type tests cost ~40 us an
    event (profile). Backslash, tab, newline and carriage return are escaped.
    """
    if isinstance(column.type, JSON):
        # orjson escapes every control character inside strings and writes no
        # whitespace between tokens: only the backslash needs COPY's escape.
        return lambda value: _json(value).replace("\\", "\\\\")
    if isinstance(column.type, TypeDecorator):
        process = column.type.bind_processor(dialect)
        assert process is not None
        python_type = column.type.impl_instance.python_type
        base = _plain_formatter(python_type)
        return lambda value: base(process(value))
    return _plain_formatter(column.type.python_type)


def _plain_formatter(python_type: type) -> Callable[[Any], str]:
    if python_type is bool:
        return lambda value: "t" if value else "f"
    if python_type is datetime:
        # A batch repeats its times (stored_at, received_at, hours): format each once.
        seen: dict[datetime, str] = {}

        def stamp(value: datetime) -> str:
            text = seen.get(value)
            if text is None:
                text = seen[value] = value.isoformat(sep=" ")
            return text

        return stamp
    if python_type is str:
        return _copy_text
    return lambda value: _copy_text(str(value))


#: PostgreSQL error classes that are the server's condition, not the statement's data:
#: insufficient resources (disk full, out of memory), operator intervention, system
#: errors (I/O) and configuration file errors.
_SERVER_CONDITIONS = ("53", "57", "58", "F0")
#: Undefined table, column, function or object: the schema is not what this code
#: expects (a worker started before ``analytics migrate``).
_SCHEMA_MISMATCH = ("42P01", "42703", "42883", "42704", "3F000")


def is_retryable(exc: BaseException) -> bool:
    """Whether a failure is the environment's, not the batch's: retry it, never drop it.

    Transient errors (:func:`is_transient`), a schema that is not migrated yet,
    and the server's own conditions (disk full, shutting down) all pass when the
    environment is mended; a batch that met them must come back, not be lost or
    turned into dead letters. What is left (a value the database refuses, a
    constraint) is about the data, and is the event's.
    """
    if is_transient(exc):
        return True
    code = getattr(getattr(exc, "orig", exc), "pgcode", None)
    if not isinstance(code, str):
        return False
    return code.startswith(_SERVER_CONDITIONS) or code in _SCHEMA_MISMATCH


def needs_migration(exc: BaseException) -> bool:
    """Whether a failure says the database has not been migrated (to this code's schema)."""
    cause = getattr(exc, "orig", exc)
    code = getattr(cause, "pgcode", None)
    if isinstance(code, str):
        return code in _SCHEMA_MISMATCH
    text = str(cause)
    return text.startswith(("no such table", "no such column"))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed: lost connections, deadlocks, a locked SQLite file."""
    import psycopg2
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    # A driver error SQLAlchemy did not wrap (code on a raw cursor that does not go
    # through on_driver_cursor).
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
