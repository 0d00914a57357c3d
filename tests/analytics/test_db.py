"""The PostgreSQL engine's pool: a connection is pinged before use only after sitting idle.

On real PostgreSQL: the ping is counted on the DBAPI cursor (it runs below SQLAlchemy's
statement events), and a lost connection is a backend ended with ``pg_terminate_backend``.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from analytics import db
from analytics.db import is_transient, make_engine


@pytest.fixture
def engine(postgres_url):
    """An engine of the test's own, so that its pool holds one connection, the test's."""
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def only(rows: Any) -> Any:
    """The one value of the one row of ``rows``."""
    ((value,),) = rows
    return value


def terminate(postgres_engine, pid: int) -> None:
    """End the backend ``pid`` and wait until it is gone."""
    # Autocommit: a transaction keeps reading the pg_stat_activity it first read.
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        while conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one():
            assert time.monotonic() < deadline, f"backend {pid} still runs"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("idle_limit", "pings"), [(db.PING_AFTER_IDLE, 0), (0, 1)], ids=["at once", "after idling"]
)
def test_a_connection_checked_out_again_is_pinged_only_after_sitting_idle(
    engine, monkeypatch, idle_limit, pings
):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", idle_limit)
    with engine.connect() as conn:
        dbapi_connection = conn.connection.dbapi_connection
    sent: list[str] = []

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            sent.append(query)
            return super().execute(query, vars)

    dbapi_connection.cursor_factory = Counting
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is dbapi_connection
    assert len(sent) == pings, sent


def test_a_connection_lost_while_idle_is_replaced_at_checkout_without_an_error(
    engine, postgres_engine, monkeypatch
):
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0)
    lost = backend_pid(engine)
    terminate(postgres_engine, lost)
    assert backend_pid(engine) != lost


def test_a_connection_lost_within_the_idle_limit_fails_once_as_retryable_then_is_replaced(
    engine, postgres_engine
):
    # The price of not pinging busy connections: a PostgreSQL restart under load shows
    # at a connection's next use, as an error the tasks retry.
    lost = backend_pid(engine)
    terminate(postgres_engine, lost)
    with pytest.raises(OperationalError) as failed:
        backend_pid(engine)
    assert is_transient(failed.value)
    assert backend_pid(engine) != lost


def test_array_literals_read_back_as_the_values_they_were_made_of(pg):
    from datetime import date, datetime
    from decimal import Decimal

    from analytics.db import array_literal

    texts = ['plain', 'a "quoted" word', "back\\slash", "{braces},commas", " spaced ", "",
             "NULL", "null", "tab\tnew\nline", "üñí©ødé ✓", None, "\\\"", "'single'"]  # fmt: skip
    columns: dict[str, list[Any]] = {
        "text[]": texts,
        "bigint[]": [0, -7, 2**62, None],
        "numeric[]": [Decimal("2.50"), Decimal("-0.01"), None],
        "double precision[]": [1.5, -0.25, 1e-9, None],
        "boolean[]": [True, False, None],
        "timestamp[]": [datetime(2024, 1, 2, 3, 4, 5, 6), datetime(2024, 2, 29), None],
        "date[]": [date(2024, 2, 29), None],
    }
    with pg.connect() as conn:
        for cast, values in columns.items():
            sql = f"SELECT v FROM unnest(CAST(:a AS {cast})) WITH ORDINALITY AS u(v, n) ORDER BY n"
            # With and without NULLs: an array of one type is written whole, two ways.
            for sent in (values, [value for value in values if value is not None]):
                back = conn.execute(text(sql), {"a": array_literal(sent)}).scalars().all()
                assert back == sent, (cast, sent)


def test_arrays_of_one_type_are_written_whole_as_a_value_at_a_time_would_be():
    """The whole-array forms (one type, None aside) give the per-value form's text exactly,
    awkward strings included; arrays of several types go a value at a time."""
    import random
    from datetime import datetime, timedelta
    from decimal import Decimal

    from analytics.db import _array_element, _texts, array_literal

    rnd = random.Random(7)
    make = {
        "text": lambda: "".join(rnd.choice('ab "\\{},\tü') for _ in range(rnd.randint(0, 4))),
        "int": lambda: rnd.randint(-(10**12), 10**12),
        "numeric": lambda: Decimal(rnd.randint(-(10**6), 10**6)) / 100,
        "timestamp": lambda: datetime(2024, 1, 1) + timedelta(microseconds=rnd.randint(0, 10**12)),
        # Times that repeat, as a batch's hours do: each distinct one is formatted once.
        "hour": lambda: datetime(2024, 1, 1, rnd.randint(0, 2)),
        "mixed": lambda: rnd.choice(["x", 1, True, 2.5, Decimal("1.5")]),
    }
    for _ in range(3000):
        kind = rnd.choice(list(make))
        values = [None if rnd.random() < 0.2 else make[kind]() for _ in range(rnd.randint(0, 6))]
        assert array_literal(values) == "{" + ",".join(map(_array_element, values)) + "}", values
    # A string to escape sends its array a value at a time.
    assert _texts(["a", 'b"c'], False) is None and _texts(["a", "b\\c", None], True) is None
    assert _texts(["a", "b", None], True) == '{"a","b",NULL}'


def test_the_process_s_engines_give_one_session_factory_each_other_engines_a_new_one(
    tmp_path, monkeypatch
):
    """A worker's tasks share their engine's factory (making one a task cost ~120 us); an
    engine the process does not keep gets a factory of its own, kept by nobody."""
    from sqlalchemy import create_engine

    from analytics import db

    monkeypatch.setattr(db, "_engines", {})
    monkeypatch.setattr(db, "_factories", {})
    kept = db.get_engine(f"sqlite:///{tmp_path}/kept.db")
    other = create_engine(f"sqlite:///{tmp_path}/other.db")
    try:
        assert db.session_factory(kept) is db.session_factory(kept)
        assert db.session_factory(other) is not db.session_factory(other)
        assert list(db._factories) == [kept]
        for engine in (kept, other):
            with db.session_factory(engine).begin() as session:
                assert session.get_bind() is engine
                assert session.expire_on_commit is False
    finally:
        kept.dispose()
        other.dispose()


def test_json_documents_go_as_one_json_array_that_reads_back_in_order(pg):
    from analytics.db import _json_array

    documents: list[Any] = [{"a": 'it\'s "q" \\ {x}'}, [1, None], "ü ✓", None, 2.5, {}]
    with pg.connect() as conn:
        sql = "SELECT v FROM json_array_elements(CAST(:a AS json)) WITH ORDINALITY AS u(v, n)"
        back = conn.execute(text(sql + " ORDER BY n"), {"a": _json_array(documents, None)})
        assert back.scalars().all() == documents
    # SQL's NULL has no place in a JSON array: a column that would write one is refused.
    with pytest.raises(ValueError, match="SQL NULL"):
        _json_array([{"a": 1}, None], lambda value: None if value is None else "{}")


def _prepares_counted(engine) -> list[str]:
    """Every statement text sent on ``engine`` that PREPAREs something."""
    from sqlalchemy import event

    sent: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        sent.extend(part for part in statement.split("; ") if part.startswith("PREPARE"))

    return sent


def _server_prepared(session) -> set[str]:
    return set(session.execute(text("SELECT name FROM pg_prepared_statements")).scalars())


def test_a_statement_is_prepared_once_per_connection_then_executed_by_name(engine):
    from sqlalchemy.orm import Session

    from analytics.db import Prepared, execute_prepared

    plus_one = Prepared.of("SELECT x + 1 FROM unnest(%s::bigint[]) AS u(x) ORDER BY x")
    assert plus_one.arity == 1 and "$1::bigint[]" in plus_one.body
    prepares = _prepares_counted(engine)
    for values, expected in (("{1,2}", [2, 3]), ("{41}", [42]), ("{}", [])):
        with Session(engine) as session, session.begin():
            assert [x for (x,) in execute_prepared(session, [plus_one], [values])] == expected
            assert plus_one.name in _server_prepared(session)
    assert prepares == [f"PREPARE {plus_one.name} AS {plus_one.body}"]


def test_after_a_failed_round_trip_the_next_one_deallocates_and_prepares_again(engine):
    """PREPARE outlives the rollback of its transaction: a failed round trip may have
    prepared what it was not known to have, and PREPAREing a name twice is an error."""
    from sqlalchemy.exc import DataError
    from sqlalchemy.orm import Session

    from analytics.db import Prepared, execute_prepared

    first = Prepared.of("SELECT %s::int + 0")
    constant = Prepared.of("SELECT 5")
    divide = Prepared.of("SELECT 1 / %s::int")
    prepares = _prepares_counted(engine)
    with Session(engine) as session, session.begin(), pytest.raises(DataError):
        execute_prepared(session, [first, divide], [1, 0])  # both prepared, then 1/0
    with Session(engine) as session, session.begin():
        assert _server_prepared(session) >= {first.name, divide.name}
        assert only(execute_prepared(session, [first, divide], [7, 1])) == 1
        assert only(execute_prepared(session, [first], [7])) == 7
        assert only(execute_prepared(session, [constant], ())) == 5
        assert _server_prepared(session) == {first.name, divide.name, constant.name}
    # Prepared twice each: before the failure, and once after it (DEALLOCATE ALL), not again.
    again = [f"PREPARE {p.name} AS {p.body}" for p in (first, divide)] * 2
    assert sorted(prepares) == sorted([*again, f"PREPARE {constant.name} AS SELECT 5"])


def test_with_DATABASE_PREPARE_0_the_statements_go_as_text(engine, monkeypatch):
    from sqlalchemy.orm import Session

    from analytics import config
    from analytics.db import Prepared, execute_prepared

    monkeypatch.setenv("DATABASE_PREPARE", "0")
    config.get_settings.cache_clear()
    try:
        prepares = _prepares_counted(engine)
        twice = Prepared.of("SELECT 2 * %s::int")
        with Session(engine) as session, session.begin():
            assert only(execute_prepared(session, [twice], [21])) == 42
            assert _server_prepared(session) == set()
        assert prepares == []
    finally:
        monkeypatch.undo()
        config.get_settings.cache_clear()


@pytest.mark.parametrize("prepare", ["1", "0"])
def test_writes_send_what_they_hold_locks_and_a_read_in_one_round_trip(
    engine, monkeypatch, prepare
):
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from analytics import config
    from analytics.db import _LOCK, Writes

    monkeypatch.setenv("DATABASE_PREPARE", prepare)
    config.get_settings.cache_clear()
    sent: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        sent.append(sql)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session, session.begin():
            session.execute(text("CREATE TEMPORARY TABLE t (x int)"))
            sent.clear()
            writes = Writes(session)
            writes.text("INSERT INTO t VALUES (%s)", [1])
            writes.lock("b", "a", "b")
            writes.text("INSERT INTO t SELECT x + %s FROM t", [10])
            assert sent == []  # held
            # In order: the second insert sees the first; the read sees both.
            assert list(writes.send(("SELECT x FROM t WHERE x > %s ORDER BY x", [0]))) == [
                (1,),
                (11,),
            ]
            assert len(sent) == 1
            assert sent[0].index("INSERT INTO t VALUES") < sent[0].index("SELECT x + ")
            held_locks = session.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            ).scalar_one()
            assert held_locks == 2  # "a" and "b", once each, until the transaction ends
            # Only the lock's statement is PREPAREd; text goes as it is, planned each run.
            prepared = {_LOCK.name} if prepare == "1" else set()
            assert _server_prepared(session) == prepared
            sent.clear()
            assert writes.send() == [] and sent == []  # nothing held, nothing sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        config.get_settings.cache_clear()


def test_driver_rows_runs_in_the_transaction_and_returns_the_last_statements_rows(engine):
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from analytics.db import driver_rows

    seen: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, sql, p, *_: seen.append((sql, p)))
    with Session(engine) as session:
        with session.begin():
            session.execute(text("CREATE TEMPORARY TABLE t (x int)"))
            assert (
                driver_rows(session.connection(), "INSERT INTO t VALUES (%s), (%s)", (1, 2)) == []
            )
            assert driver_rows(
                session.connection(), "SELECT 0; SELECT x, x * 2 FROM t ORDER BY x"
            ) == [
                (1, 2),
                (2, 4),
            ]
        # The rows went in with the session's transaction.
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    assert ("INSERT INTO t VALUES (%s), (%s)", (1, 2)) in seen


def test_driver_rows_raises_sqlalchemys_errors_and_gives_up_a_lost_connection(
    engine, postgres_engine
):
    from sqlalchemy.exc import DataError, IntegrityError
    from sqlalchemy.orm import Session

    from analytics.db import driver_rows

    with Session(engine) as session, session.begin(), pytest.raises(DataError) as refused:
        driver_rows(session.connection(), "SELECT 1 / %s::int", (0,))
    assert not refused.value.connection_invalidated
    with Session(engine) as session, session.begin(), pytest.raises(IntegrityError):
        driver_rows(
            session.connection(),
            "CREATE TEMPORARY TABLE u (x int PRIMARY KEY); INSERT INTO u VALUES (1), (1)",
        )

    pid = backend_pid(engine)
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        terminate(postgres_engine, pid)
        with pytest.raises(OperationalError) as lost:
            driver_rows(session.connection(), "SELECT 1")
        assert lost.value.connection_invalidated and is_transient(lost.value)
    # The pool does not hand the dead connection out again.
    assert backend_pid(engine) != pid


def _copy_probe(session) -> Any:
    """A temporary table with a three-character column, for COPY to fill (its staging twin)."""
    from sqlalchemy import Column, MetaData, String, Table

    session.execute(text("CREATE TEMPORARY TABLE copy_probe (code varchar(3))"))
    return Table("copy_probe", MetaData(), Column("code", String(3)))


def test_a_copy_the_database_refuses_raises_sqlalchemys_error(engine):
    from sqlalchemy.exc import DataError
    from sqlalchemy.orm import Session

    from analytics.db import copy_to_staging

    with Session(engine) as session, session.begin():
        table = _copy_probe(session)
        assert copy_to_staging(session, table, [{"code": "abc"}]) == (
            "staging_copy_probe",
            ["code"],
        )
        with pytest.raises(DataError, match="too long") as raised:
            copy_to_staging(session, table, [{"code": "abcd"}])
        assert not raised.value.connection_invalidated


def test_a_copy_that_loses_its_connection_invalidates_it(engine, postgres_engine):
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from analytics.db import copy_to_staging

    with Session(engine) as session:
        table = _copy_probe(session)
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def end_the_backend_before_copy(conn, cursor, statement, *_):
            if statement.startswith("COPY"):
                terminate(postgres_engine, pid)

        event.listen(engine, "before_cursor_execute", end_the_backend_before_copy)
        try:
            with pytest.raises(OperationalError) as raised:
                copy_to_staging(session, table, [{"code": "abc"}])
        finally:
            event.remove(engine, "before_cursor_execute", end_the_backend_before_copy)
        assert raised.value.connection_invalidated
        assert is_transient(raised.value)
        session.rollback()
    # The pool does not hand the lost connection out again.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
