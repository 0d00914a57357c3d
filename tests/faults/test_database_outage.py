"""Fault: PostgreSQL goes away for 20 s mid-stream and comes back.

The test runs its own throwaway cluster (``scratch_postgres``) and stops that one:
the machine's PostgreSQL serves other tests and benchmarks and is never touched.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from analytics.db import make_engine
from tests.faults.helpers import Publisher, assert_exact, log, settle

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

#: How long the database stays down (the issue's figure).
OUTAGE = 20.0


def test_a_database_outage_mid_stream_is_retried_until_it_is_back_and_loses_nothing(
    scratch_postgres, start_worker, start_bridge, pipeline_env, redis_url, redis_client, stream
):
    worker = start_worker(env={**pipeline_env, "DATABASE_URL": scratch_postgres.url})
    start_bridge()
    engine = make_engine(scratch_postgres.url)
    try:
        publisher = Publisher(redis_url, stream).start()
        publisher.wait_sent(0.3)
        sent = publisher.sent
        scratch_postgres.stop("fast")  # disconnects every session, aborts open transactions
        stopped_at = time.monotonic()
        time.sleep(OUTAGE)
        scratch_postgres.start()
        down = time.monotonic() - stopped_at
        log(
            f"injected: PostgreSQL stopped (pg_ctl stop -m fast) after {sent} of {len(stream)} "
            f"events published, started again {down:.1f}s later"
        )
        publisher.join()
        waited = settle(engine, stream, redis_client)
        output = worker.output()
        retries = output.count("could not be stored now")
        log(f"settled {waited:.1f}s after PostgreSQL was back; {retries} batch retries logged")
        assert_exact(engine, stream)
        with engine.connect() as conn:
            letters = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
        assert letters == 0
        assert retries > 0
        assert "applying its events one by one" not in output
    finally:
        engine.dispose()
