"""A real warehouse worker killed mid-batch (after BigQuery took the rows): nothing lost, and
the only rows sent twice are those BigQuery took before the kill, with the same insertIds."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from analytics.db import session_factory
from analytics.models import StoredEvent, WarehouseSink
from tests.conftest import wait_for
from tests.warehouse.conftest import store_events

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]


def test_a_sink_killed_mid_batch_loses_nothing(
    pg, bigquery, pipeline_env, start_worker, start_process
):
    expected = store_events(pg, range(300))
    env = {
        **pipeline_env,
        "WAREHOUSE": "bigquery",
        "BIGQUERY_PROJECT": "test-project",
        "BIGQUERY_DATASET": "analytics",
        "BIGQUERY_API_ENDPOINT": bigquery.url,
        "WAREHOUSE_BATCH": "50",
        "WAREHOUSE_INTERVAL": "0.5",
        "WAREHOUSE_TIMEOUT": "2",
    }
    accepted, first_batch = threading.Event(), []

    def hold(ids: list[str]) -> None:
        # The first batch is in BigQuery; its answer never reaches the worker.
        if not accepted.is_set():
            first_batch.extend(ids)
            accepted.set()
            time.sleep(30)

    bigquery.faults.on_accept = hold
    worker = start_worker("-Q", "warehouse", "--concurrency", "1", env=env)
    start_process("beat", ["beat"], env)
    assert accepted.wait(60), "the sink never sent a batch"
    time.sleep(0.5)  # the round's other requests (WAREHOUSE_CONCURRENCY) are answered
    worker.kill()
    before_kill = set(bigquery.arrivals())
    bigquery.faults.on_accept = None

    start_worker("-Q", "warehouse", "--concurrency", "1", env=env)
    with session_factory(pg).begin() as session:
        last = session.scalar(select(func.max(StoredEvent.id)))

    def delivered() -> int | None:
        with session_factory(pg).begin() as session:
            return session.scalar(select(WarehouseSink.delivered_id))

    wait_for(lambda: delivered() == last, timeout=90, what="the mark past the last event")
    assert bigquery.distinct() == expected

    arrivals = Counter(bigquery.arrivals())
    twice = {i for i, n in arrivals.items() if n > 1}
    assert set(first_batch) <= twice <= before_kill
    assert max(arrivals.values()) == 2 and len(first_batch) == 50
    assert len(before_kill) <= 4 * 50  # one round: WAREHOUSE_CONCURRENCY batches
