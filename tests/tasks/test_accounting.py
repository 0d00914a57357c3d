"""Every message the bridge reads is accounted for: stored, a duplicate, or one dead letter.

Function level, in process, on PostgreSQL: hypothesis draws mixtures of valid
events, duplicates and invalid messages of every kind (``tests/accounting.py``),
the real ``bridge.relay.Bridge`` routes and batches them exactly as it does a
subscription's messages (``_group`` then ``_flush``, its ``send`` capturing the
batches), each batch is packed as the sender packs it (``analytics.batch.pack``)
and goes through Celery's JSON round trip, and then runs in
process through the real task (``TASKS[name].apply``: eager, no broker), and
:func:`tests.accounting.check` compares the database with what was sent.

One test per invalid kind (``a`` … ``f``, short channels, so that it fails for
its kind only), one of valid events only (the variations the contract allows,
on over-long channels too), one of over-long channels, and one of everything
mixed; 2,000 examples in all. The end-to-end version, through real
processes, is ``test_accounting_pipeline.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads
from sqlalchemy import Engine

import tasks.ingest
from analytics.batch import pack, unpack
from analytics.config import Settings, get_settings
from bridge.relay import Bridge
from tests.accounting import (
    INVALID_KINDS,
    LIMITS_ENV,
    Expected,
    Mixture,
    bad_encoding,
    bad_envelope,
    check,
    invalid_drafts,
    mixtures,
    render,
)

#: Test name -> (what hypothesis draws, examples).
CASES: dict[str, tuple[Any, int]] = {
    "mixed": (mixtures(invalid_drafts), 600),
    "valid only": (mixtures(invalid_drafts, max_valid=10, max_invalid=0, long_channels=False), 200),
    "long channels": (mixtures(bad_encoding() | bad_envelope(), long_channels=True), 150),
    **{
        kind: (mixtures(strategy, long_channels=False), 150 if kind in "bef" else 200)
        for kind, strategy in INVALID_KINDS.items()
    },
}


@pytest.fixture
def in_process(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str, channel_prefix: str
) -> Iterator[Settings]:
    """Settings of the tasks run in this process: the run's database, small limits.

    ``get_settings`` is cached: it is cleared before and after. The task's delivery
    ledger (struck on every run) is the run's Redis DB.
    """
    monkeypatch.delenv("PII_SALT", raising=False)
    for name, value in {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
        **LIMITS_ENV,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tasks.ingest, "_ledger", None)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def run_in_process(settings: Settings, expected: Expected, batch_size: int) -> list[str]:
    """Route the messages with the real bridge, run every batch through its task.

    Returns the failures of tasks (a failed batch is not acknowledged: its messages
    are accounted for by nothing).
    """
    batches: list[tuple[str, list[Any]]] = []
    sent = 0

    def send(
        task: str, queue: str, items: list[list[Any]], *, by_type: dict[str, int] | None = None
    ) -> None:
        nonlocal sent
        sent += len(items)
        # What the worker gets back from the broker: the batch packed as the sender packs
        # it (analytics.batch), through Celery's JSON.
        batches.append((task, kombu_loads(kombu_dumps(pack(items)))))

    bridge = Bridge(dataclasses.replace(settings, bridge_batch_size=batch_size), send=send)
    received = time.time()
    bridge._group((m.channel.encode(), m.data, received, None) for m in expected.messages)
    bridge._flush(force=True)
    assert sent == len(expected.messages)
    failures = []
    for task, packed in batches:
        result = tasks.ingest.TASKS[task].apply(args=[packed])
        if result.failed():
            failures.append(
                f"task {task} failed on a batch of {len(unpack(packed))}: {result.result!r:.400}"
            )
    return failures


@pytest.mark.parametrize("case", list(CASES))
def test_every_message_is_stored_a_duplicate_or_one_dead_letter(
    case: str, pg: Engine, in_process: Settings, channel_prefix: str
) -> None:
    strategy, examples = CASES[case]
    seen: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mixture=strategy, batch_size=st.sampled_from((500, 500, 3)))
    def example(mixture: Mixture, batch_size: int) -> None:
        expected = render(mixture, f"{channel_prefix}:")
        problems = run_in_process(in_process, expected, batch_size)
        problems += check(pg, expected)
        assert not problems, "\n".join(problems)
        seen["examples"] += 1
        seen["messages"] += expected.sent
        seen["duplicates"] += expected.duplicates
        seen["stored"] += expected.valid
        seen["dead letters"] += len(expected.dead)
        seen.update(f"kind {k}" for k in expected.kinds().elements())

    example()
    kinds = " ".join(f"{k[5:]}={n}" for k, n in sorted(seen.items()) if k.startswith("kind "))
    print(
        f"\n[accounting] {case}: {seen['examples']} examples, {seen['messages']} messages "
        f"({seen['duplicates']} duplicates; invalid by kind {kinds or 'none'}) -> "
        f"stored {seen['stored']}, dead letters {seen['dead letters']}"
    )


def test_a_mixed_batch_says_what_became_of_each_type_and_counts_it_by_type(
    pg: Engine, in_process: Settings
) -> None:
    from prometheus_client import REGISTRY
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from analytics.models import DeadLetter, StoredEvent

    def event(event_type: str, n: int, **data: Any) -> list[Any]:
        document = {
            "event_id": f"mixed-{event_type}-{n}",
            "event_type": event_type,
            "tenant_id": "mixed",
            "timestamp": "2024-05-01T10:15:00Z",
            "data": {"order_id": f"o-{n}", "total_amount": 2.5, **data},
        }
        return [f"events:{event_type.replace('.', ':')}", orjson.dumps(document).decode(), 1.0]

    def stored(event_type: str) -> float:
        labels = {"event_type": event_type}
        return REGISTRY.get_sample_value("analytics_worker_events_stored_total", labels) or 0.0

    already = event("order.updated", 9, status="shipped")
    assert tasks.ingest.TASKS["order.updated"].apply(args=[[already]]).successful()
    before = {name: stored(name) for name in ("order.created", "order.updated", "order.mixed")}
    batch = [
        event("order.created", 1),
        event("order.updated", 1, status="shipped"),
        event("order.created", 1),  # a duplicate inside the batch
        event("order.created", 2, total_amount="a lot"),  # a dead letter
        already,  # stored by an earlier batch
        event("order.cancelled", 1),
    ]
    result = tasks.ingest.TASKS["order.mixed"].apply(args=[batch])
    assert result.successful(), result.result
    assert result.result == {
        "stored": 3,
        "duplicates": 2,
        "dead_letters": 1,
        "by_type": {
            "order.cancelled": {"stored": 1, "duplicates": 0, "dead_letters": 0},
            "order.created": {"stored": 1, "duplicates": 1, "dead_letters": 1},
            "order.updated": {"stored": 1, "duplicates": 1, "dead_letters": 0},
        },
    }
    with Session(pg) as session:
        count = session.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
        letters = session.execute(select(func.count()).select_from(DeadLetter)).scalar_one()
    assert (count, letters) == (4, 1)
    assert stored("order.created") - before["order.created"] == 1
    assert stored("order.updated") - before["order.updated"] == 1
    assert stored("order.mixed") == before["order.mixed"] == 0


@pytest.mark.parametrize(
    "batch",
    [[{"v": 2, "zstd": "not base64 of zstd"}], [{"v": 9, "what": "a newer bridge"}]],
    ids=["a packed batch that does not unpack", "an item of a newer version"],
)
def test_a_batch_the_worker_cannot_read_is_logged_as_such_and_left_in_the_ledger(
    in_process: Settings, batch: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    from analytics.batch import UnsupportedItem
    from tasks.ledger import Ledger

    ledger = Ledger(in_process.celery_broker_url)
    ledger.record("unreadable-batch", "order.created", "orders", batch)
    try:
        with caplog.at_level("ERROR", logger="tasks.ingest"):
            result = tasks.ingest.TASKS["order.created"].apply(
                args=[batch], task_id="unreadable-batch"
            )
        assert isinstance(result.result, UnsupportedItem)
        (record,) = [r for r in caplog.records if r.name == "tasks.ingest"]
        assert "cannot be read by this worker" in record.getMessage()
        assert "ran out of retries" not in caplog.text
        assert ledger.pending() == 1  # the bridge sends it again
    finally:
        ledger.done("unreadable-batch")
