"""RabbitMQ as the Celery broker: the shared 5,000-event stream through a real bridge and
worker, exact; and a worker killed with SIGKILL mid-stream loses nothing. Redis still
carries the pub/sub input; RabbitMQ carries the batches, with no delivery ledger."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tasks.ledger import BATCHES_KEY, SENT_KEY
from tests.conftest import wait_for
from tests.faults.helpers import Publisher, assert_exact, log, results

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_broker")]


def settle(pg, stream, rabbitmq, timeout: float = 180) -> None:
    """Every event of the stream stored and nothing left in RabbitMQ."""
    from loadgen import checking

    stored, held = 0, {}

    def settled() -> bool:
        nonlocal stored, held
        stored, held = checking.count_stored(pg, stream.tenants), rabbitmq.backlog()
        return stored >= len(stream) and not held

    try:
        wait_for(settled, timeout=timeout, interval=1.0, what=f"{len(stream)} events stored")
    except BaseException:
        log(f"not settled: {stored} of {len(stream)} stored, RabbitMQ holds {held}")
        raise


@pytest.fixture
def amqp_env(pipeline_env, rabbitmq):
    return {**pipeline_env, "CELERY_BROKER_URL": rabbitmq.url}


def test_the_stream_through_rabbitmq_is_exact_and_writes_no_ledger(
    pg, start_worker, start_bridge, amqp_env, redis_url, redis_client, stream, rabbitmq
):
    start_worker(env=amqp_env)
    start_bridge(env=amqp_env)
    Publisher(redis_url, stream).start().join()
    settle(pg, stream, rabbitmq)
    assert_exact(pg, stream)
    assert not redis_client.exists(BATCHES_KEY, SENT_KEY)


@pytest.mark.fault
def test_a_worker_killed_with_sigkill_on_rabbitmq_loses_nothing(
    pg, start_worker, start_bridge, amqp_env, redis_url, stream, rabbitmq
):
    worker = start_worker(env=amqp_env)
    start_bridge(env=amqp_env)
    publisher = Publisher(redis_url, stream).start()
    publisher.wait_sent(0.4)
    wait_for(lambda: results(worker), timeout=30, what="the worker to finish a batch")
    os.killpg(worker.popen.pid, signal.SIGKILL)  # the main process and its pool children
    killed_at = time.monotonic()
    worker.popen.wait()
    held = rabbitmq.backlog()
    log(
        f"injected: kill -9 of worker group {worker.popen.pid} after {publisher.sent} of "
        f"{len(stream)} events published; RabbitMQ then held {held}"
    )
    start_worker(env=amqp_env)
    publisher.join()
    settle(pg, stream, rabbitmq)
    log(f"settled {time.monotonic() - killed_at:.1f}s after the kill")
    assert_exact(pg, stream)
