"""Fault test: arbitrary bytes and JSON on every channel, end to end, interleaved with valid events.

One real bridge and one real worker take what hypothesis generates: arbitrary
bytes, JSON values that are not objects, objects without a tenant, and simulated
events broken in one field, on the channels of every category, of a category
nobody knows and of none. Every message that is not an event is invalid by
construction (not by asking ``parse``), so the test knows what must happen to
each: after every example both processes are alive, each distinct (channel,
bytes) of a non-event is exactly one dead letter with those exact bytes, and the
valid events (from ``loadgen``) are stored and counted exactly.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from analytics.models import DeadLetter, MetricCounter, StoredEvent
from loadgen import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.fault]

#: Valid events to interleave: a realistic mix of the 15 types.
POOL = list(Simulator(tenants=1, seed=11, days=2).events(400))
#: The channel's category: the four with queues, one nobody registered, and none.
CATEGORIES = ("user", "order", "payment", "inventory", "wishlist", "")

#: What JSON encoders emit (orjson refuses wider integers).
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _never_an_object(raw: bytes) -> bytes:
    # Only text starting with "{" can be a JSON object; a NUL after it makes it invalid.
    return raw + b"\x00" if raw.lstrip(b" \t\n\r").startswith(b"{") else raw


#: Text with a NUL character: no PostgreSQL text column takes it, so it is invalid.
with_nul = st.tuples(st.text(max_size=8), st.text(max_size=8)).map(lambda p: f"{p[0]}\x00{p[1]}")
arbitrary_bytes = st.binary(max_size=200).map(_never_an_object)
not_objects = (scalars | st.lists(json_values, max_size=4)).map(orjson.dumps)
without_tenant = st.tuples(
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.none() | st.sampled_from(sorted({e["event_type"] for e in POOL})) | with_nul | json_values,
).map(
    lambda pair: orjson.dumps(
        {
            **{k: v for k, v in pair[0].items() if k != "tenant_id"},
            **({} if pair[1] is None else {"event_type": pair[1]}),
        }
    )
)
#: The id field every event type's data has (an integer is never an id).
DATA_ID = {
    "user": "user_id",
    "order": "order_id",
    "payment": "payment_id",
    "inventory": "product_id",
}
not_an_id = st.none() | with_nul | ints | st.just("") | st.just("x" * 129) | st.lists(scalars)
BREAKS = {
    "tenant_id": not_an_id,
    "event_id": ints | st.just("") | st.just("y" * 129),
    "event_type": st.none() | ints | st.just(""),
    "user_id": ints | st.lists(scalars, min_size=1),
    "timestamp": ints | st.text(max_size=20).map(lambda t: "not a time " + t),
    "data": ints | st.text() | st.lists(scalars),
    "metadata": st.floats(max_value=-0.01, allow_nan=False, allow_infinity=False).map(
        lambda ms: {"response_time_ms": ms}
    ),
    "data id": ints | st.lists(scalars, min_size=1),
}


@st.composite
def broken_events(draw: Any) -> bytes:
    """A simulated event with one field made invalid."""
    document = copy.deepcopy(draw(st.sampled_from(POOL)))
    field = draw(st.sampled_from(sorted(BREAKS)))
    value = draw(BREAKS[field])
    if field == "data id":
        document["data"][DATA_ID[document["event_type"].split(".")[0]]] = value
    elif field == "tenant_id" and draw(st.booleans()):
        del document["tenant_id"]
    else:
        document[field] = value
    return orjson.dumps(document)


non_events = arbitrary_bytes | not_objects | without_tenant | broken_events()
messages = st.lists(
    st.one_of(
        st.tuples(st.just("bad"), st.sampled_from(CATEGORIES), non_events),
        st.tuples(st.just("event"), st.sampled_from(CATEGORIES[:-1]), st.sampled_from(POOL)),
    ),
    min_size=50,
    max_size=90,
)


def scalar(engine: Engine, stmt: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


def _by_dimension(pg: Engine, tenant: str, metric: str, column: Any) -> dict[str, Any]:
    """A counter metric's ``column`` summed per dimension, for one tenant."""
    with pg.connect() as conn:
        return dict(
            conn.execute(
                select(MetricCounter.dimension, func.sum(column))
                .where(MetricCounter.tenant_id == tenant, MetricCounter.metric == metric)
                .group_by(MetricCounter.dimension)
            ).all()
        )


def test_arbitrary_input_on_every_channel_kills_nothing_and_each_non_event_is_one_dead_letter(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    worker = start_worker()
    bridge = start_bridge()
    seen = {"examples": 0, "messages": 0, "dead": 0}

    @settings(
        max_examples=4,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # shrinking would restart the pipeline's work many times
        suppress_health_check=list(HealthCheck),
    )
    @given(messages)
    def example(batch: list[tuple[str, str, Any]]) -> None:
        token = uuid.uuid4().hex[:8]
        tenant = f"fuzz-{token}"
        expected_dead: set[tuple[str, bytes]] = set()
        valid: dict[str, dict[str, Any]] = {}
        before = scalar(pg, select(func.coalesce(func.max(DeadLetter.id), 0)))
        pipe = redis_client.pipeline(transaction=False)
        for kind, category, payload in batch:
            channel = f"{channel_prefix}:{category}:{token}"
            if kind == "event":
                event = {**payload, "tenant_id": tenant}
                valid[event["event_id"]] = event
                pipe.publish(channel, orjson.dumps(event))
            else:
                expected_dead.add((channel, payload))
                pipe.publish(channel, payload)
        assert all(receivers == 1 for receivers in pipe.execute())

        def stored() -> int:
            return scalar(
                pg,
                select(func.count())
                .select_from(StoredEvent)
                .where(StoredEvent.tenant_id == tenant),
            )

        def dead() -> set[tuple[str, bytes]]:
            with pg.connect() as conn:
                rows = conn.execute(
                    select(DeadLetter.channel, DeadLetter.raw).where(DeadLetter.id > before)
                ).all()
            return {(channel, bytes(raw)) for channel, raw in rows}

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if stored() == len(valid) and len(dead()) >= len(expected_dead):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # anything extra (a duplicate, a second letter) has had time to land
        assert worker.alive and bridge.alive
        letters = dead()
        assert sorted(expected_dead - letters) == [], "non-events without a dead letter"
        assert sorted(letters - expected_dead) == [], "dead letters of no non-event"
        assert stored() == len(valid)
        counted = _by_dimension(pg, tenant, "events_by_type", MetricCounter.count)
        revenue = _by_dimension(pg, tenant, "revenue", MetricCounter.total)
        assert counted == dict(Counter(e["event_type"] for e in valid.values()))
        orders = [e["data"] for e in valid.values() if e["event_type"] == "order.created"]
        wanted: dict[str, Decimal] = defaultdict(Decimal)
        for data in orders:
            wanted[data["currency"]] += Decimal(str(data["total_amount"]))
        assert revenue == dict(wanted)
        seen["examples"] += 1
        seen["messages"] += len(batch)
        seen["dead"] += len(expected_dead)

    example()
    print(
        f"\n{seen['examples']} examples, {seen['messages']} messages, "
        f"{seen['dead']} distinct non-events -> as many dead letters"
    )
    assert seen["examples"] >= 3
