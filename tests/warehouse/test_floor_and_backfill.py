"""The retention floor, backfills, the settings and the `analytics warehouse` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date

import pytest
from sqlalchemy import insert

from analytics.config import Settings
from analytics.db import session_factory
from analytics.errors import ConfigError
from analytics.models import StoredEvent
from analytics.warehouse import deliver, undelivered_floor
from analytics.warehouse.backfill import backfill
from analytics.warehouse.bigquery import BigQueryTable
from tests.warehouse.conftest import event_row, store_events, warehouse_settings


def floor(engine, settings):
    with session_factory(engine).begin() as session:
        return undelivered_floor(session, settings)


def test_undelivered_floor_is_the_first_id_the_warehouse_may_not_have(engine, bigquery, store):
    settings = warehouse_settings(bigquery, warehouse_batch=4)
    assert floor(engine, Settings()) is None  # no warehouse: nothing to keep for it
    assert floor(engine, settings) == 1  # the sink has not run: everything
    store(range(10))
    with session_factory(engine).begin() as session:
        ids = sorted(session.scalars(session.query(StoredEvent.id).statement))
    deliver(session_factory(engine), settings, BigQueryTable(settings), max_batches=1)
    assert floor(engine, settings) == ids[3] + 1
    deliver(session_factory(engine), settings, BigQueryTable(settings))
    assert floor(engine, settings) == ids[-1] + 1


def test_undelivered_floor_stays_below_a_writer_still_in_flight(pg, bigquery):
    settings = warehouse_settings(bigquery)
    with pg.connect() as slow:
        (first,) = slow.execute(insert(StoredEvent).returning(StoredEvent.id), [event_row(1)]).one()
        store_events(pg, range(2, 5))
        deliver(session_factory(pg), settings, BigQueryTable(settings))
        assert floor(pg, settings) <= first
        slow.commit()


def test_backfill_sends_a_range_again_with_the_same_insert_ids(engine, bigquery, store):
    expected = store(range(0, 3 * 24 * 60, 180))  # every 3 hours for 3 days, from Dec 1
    settings = warehouse_settings(bigquery)
    deliver(session_factory(engine), settings, BigQueryTable(settings))
    bigquery.faults.transient_requests = 1
    done = backfill(
        session_factory(engine),
        settings,
        BigQueryTable(settings),
        date(2026, 12, 2),
        date(2026, 12, 2),
        sleep=lambda _: None,
    )
    assert (done.sent, done.rejected) == (8, 0)
    arrivals = Counter(bigquery.arrivals())
    assert sorted(Counter(arrivals.values()).items()) == [(1, 16), (2, 8)]
    assert bigquery.distinct() == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WAREHOUSE": "redshift"}, "WAREHOUSE='redshift' is not one of: bigquery"),
        ({"WAREHOUSE": "bigquery", "BIGQUERY_DATASET": "d"}, "needs BIGQUERY_PROJECT"),
        ({"WAREHOUSE": "bigquery", "BIGQUERY_PROJECT": "p"}, "needs BIGQUERY_DATASET"),
        (
            {"WAREHOUSE": "bigquery", "BIGQUERY_PROJECT": "p", "BIGQUERY_DATASET": "a-b"},
            "BIGQUERY_DATASET='a-b' is not a valid BigQuery name",
        ),
        (
            {
                "WAREHOUSE": "bigquery",
                "BIGQUERY_PROJECT": "p",
                "BIGQUERY_DATASET": "d",
                "BIGQUERY_API_ENDPOINT": "localhost:9050",
            },
            "BIGQUERY_API_ENDPOINT='localhost:9050' is not a URL",
        ),
        ({"WAREHOUSE_BATCH": "60000"}, "over BigQuery's limit of 50,000"),
        ({"WAREHOUSE_INTERVAL": "0"}, "WAREHOUSE_INTERVAL='0' must be at least 0.1"),
    ],
)
def test_warehouse_settings_are_validated_in_one_line(env, message):
    with pytest.raises(ConfigError, match=None) as caught:
        Settings.from_env(env)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_warehouse_is_off_unless_configured():
    assert not Settings.from_env({}).warehouse_enabled
    on = Settings.from_env(
        {"WAREHOUSE": "BigQuery", "BIGQUERY_PROJECT": "my-proj", "BIGQUERY_DATASET": "raw"}
    )
    assert on.warehouse_enabled and on.bigquery_table == "events"
    assert on.warehouse_sink == "bigquery:my-proj.raw.events"


def _cli(url, server, *args):
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WAREHOUSE": "bigquery",
        "BIGQUERY_PROJECT": "test-project",
        "BIGQUERY_DATASET": "analytics",
        "BIGQUERY_API_ENDPOINT": server.url,
    }
    return subprocess.run(
        [sys.executable, "-m", "analytics", "warehouse", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_warehouse_commands_show_status_and_backfill(sqlite_url, bigquery):
    from analytics.db import make_engine

    engine = make_engine(sqlite_url)
    expected = store_events(engine, range(5))
    engine.dispose()

    status = _cli(sqlite_url, bigquery, "status", "--format", "json")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert (row["sink"], row["lag_events"]) == ("bigquery:test-project.analytics.events", 5)

    done = _cli(sqlite_url, bigquery, "backfill", "--since", "2026-12-01", "--until", "2026-12-01")
    assert done.returncode == 0, done.stderr
    assert "sent 5 events dated 2026-12-01 to 2026-12-01" in done.stdout
    assert bigquery.distinct() == expected

    bad = _cli(sqlite_url, bigquery, "backfill", "--since", "2026-12-02", "--until", "2026-12-01")
    assert bad.returncode != 0
    assert (
        bad.stderr.strip().splitlines()[-1]
        == "Error: --since 2026-12-02 is after --until 2026-12-01"
    )


def test_beat_sends_the_sink_runs_only_when_a_warehouse_is_configured():
    import sys

    import tasks  # noqa: F401  (tasks.app, the module, is shadowed by its `app`)

    schedule = sys.modules["tasks.app"]._warehouse_schedule
    assert schedule(Settings()) == {}
    on = Settings.from_env(
        {"WAREHOUSE": "bigquery", "BIGQUERY_PROJECT": "p", "BIGQUERY_DATASET": "d"}
    )
    (entry,) = schedule(on).values()
    assert entry["task"] == "warehouse.deliver" and entry["schedule"] == on.warehouse_interval
    from tasks.queues import ROUTES

    assert ROUTES["warehouse.deliver"] == "warehouse"
