"""End to end, with real bridge and worker processes: at a low rate the bridge sends the
event types of every category together (``events.mixed``, or ``<category>.mixed`` when
one category fills the message) and every aggregate is exact; a busy stream still goes
in tasks of its own event type.

Exactness is checked against the independent oracle of tests/reports/oracle.py on the
report dataset (2,800 events of every type, with exact duplicates, late and
out-of-order events), published at a few hundred events a second with the messages
that must become dead letters in among them.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.models import DeadLetter, StoredEvent
from analytics.reports import REPORTS, Query, run
from loadgen import channel_for
from tests.conftest import wait_for
from tests.reports import dataset, oracle

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_broker")]

NOW = datetime(2024, 3, 20, 12, 0)
#: Materialised by rollups (beat), so not current when the last task commits.
ROLLED_UP = {"dau", "wau", "mau", "alerts"}
#: Their dead-letter rows carry the time the worker received them: left out here.
WITH_LETTERS = {"operations"}


def count(engine, model) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def finished(output: str, task: str) -> list[str]:
    """The results of the tasks named ``task`` that the worker's log says succeeded."""
    return re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in [^:]+: (.*)", output)


def test_a_low_rate_stream_goes_in_mixed_tasks_and_every_report_is_exact(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    worker = start_worker()
    start_bridge()
    documents = dataset.build()
    letters = dataset.dead_letter_payloads()
    messages = [(channel_for(d["event_type"], channel_prefix), orjson.dumps(d)) for d in documents]
    # The dead letters in among the events, on a channel of the order category.
    for n, raw in enumerate(letters):
        messages.insert(n * len(messages) // len(letters), (f"{channel_prefix}:order:x", raw))
    # ~400 events/s: 10 every 25 ms, so that each type's batch is under-filled when due.
    for start in range(0, len(messages), 10):
        pipe = redis_client.pipeline(transaction=False)
        for channel, data in messages[start : start + 10]:
            pipe.publish(channel, data)
        assert all(receivers == 1 for receivers in pipe.execute())
        time.sleep(0.025)
    unique = len({(d["tenant_id"], d["event_id"]) for d in documents})
    wait_for(lambda: count(pg, StoredEvent) == unique, timeout=120, what=f"{unique} events")
    wait_for(lambda: count(pg, DeadLetter) == len(letters), timeout=30, what="the dead letters")
    time.sleep(1)  # the last task's aggregates, and anything that would count twice
    assert (count(pg, StoredEvent), count(pg, DeadLetter)) == (unique, len(letters))

    output = worker.output()
    mixed = [
        result
        for task in ("events", "user", "order", "payment", "inventory")
        for result in finished(output, f"{task}.mixed")
    ]
    assert len(mixed) >= 20, output[-3000:]
    assert all("'by_type': {" in result for result in mixed)
    # Most carried several categories: every type is under-filled at this rate.
    across = finished(output, "events.mixed")
    assert len(across) >= len(mixed) // 2, output[-3000:]
    categories = ("user", "order", "payment", "inventory")
    assert any(sum(f"'{c}." in r for c in categories) >= 3 for r in across), across[:3]
    # A mixed batch held the dead letters that were valid JSON with a known type.
    assert any(re.search(r"'dead_letters': [1-9]", result) for result in mixed)

    mismatches = []
    for tenant in ("tenant-1", "tenant-2"):
        for name in sorted(set(REPORTS) - ROLLED_UP - WITH_LETTERS):
            with Session(pg) as session, session.begin():
                actual = run(session, name, Query(tenant, now=NOW))
            expected = oracle.expected(name, documents, tenant=tenant, now=NOW)
            if actual != expected:
                mismatches.append(f"{tenant} {name}:\n  got {actual[:3]}\n  not {expected[:3]}")
    assert not mismatches, "\n".join(mismatches)


def test_a_busy_stream_still_goes_in_tasks_of_its_own_type(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    worker = start_worker()
    start_bridge()
    channel = channel_for("order.created", channel_prefix)
    pipe = redis_client.pipeline(transaction=False)
    for n in range(3000):
        document = {
            "event_id": f"busy-{n}",
            "event_type": "order.created",
            "tenant_id": "busy",
            "timestamp": "2024-05-01T10:15:00Z",
            "data": {"order_id": f"o-{n}", "total_amount": 1.5},
        }
        pipe.publish(channel, orjson.dumps(document))
    pipe.execute()
    wait_for(lambda: count(pg, StoredEvent) == 3000, timeout=60, what="3000 events")

    def logged() -> int:
        """The events the worker's log says its order.created tasks stored."""
        results = finished(worker.output(), "order.created")
        stored = [re.search(r"'stored': (\d+)", result) for result in results]
        return sum(int(match.group(1)) for match in stored if match)

    # A task's line is logged after its commit: the last one may lag the count above.
    wait_for(lambda: logged() >= 3000, timeout=10, what="the last task's log line")
    output = worker.output()
    assert finished(output, "order.created") and not finished(output, "order.mixed")
    assert logged() == 3000
