"""Fault: two tenants whose product, order, user (and event) ids collide, through the real pipeline.

Tenant B's stream is simulated apart from A's and then given A's ids: the same
users, products, locations, orders and payments, with other amounts, quantities
and times. Every report of A must be the same whether B's events went through the
same bridge, batches and workers or not (the function-level version of this is
``tests/analytics/test_reports.py``; here it is end to end).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy.orm import Session

from analytics.reports import REPORTS, Query, run
from loadgen import Simulator, publishing
from tests.conftest import truncate_all
from tests.faults.helpers import COUNT, assert_exact, log, publish, settle, subset

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

START = datetime(2024, 3, 4, tzinfo=UTC)
DAYS = 3
#: When the reports are asked (window metrics and abandonment depend on it).
NOW = datetime(2024, 3, 8)
#: Which kind of entity an id-carrying field names, wherever it appears in an envelope.
ID_FIELDS = {
    "user_id": "user", "customer_id": "user", "cancelled_by": "user", "restocked_by": "user",
    "adjusted_by": "user", "order_id": "order", "order_number": "order number",
    "payment_id": "payment", "product_id": "product", "variant_id": "variant",
    "location_id": "location", "inventory_id": "inventory",
}  # fmt: skip


def _ids(value: Any, found: dict[str, dict[str, None]]) -> None:
    """Collect the ids of ``value`` per kind, in order of first appearance."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ID_FIELDS and isinstance(item, str):
                found[ID_FIELDS[key]].setdefault(item)
            else:
                _ids(item, found)
    elif isinstance(value, list):
        for item in value:
            _ids(item, found)


def _renamed(value: Any, mapping: dict[str, dict[str, str]]) -> Any:
    if isinstance(value, dict):
        return {
            key: mapping[ID_FIELDS[key]].get(item, item)
            if key in ID_FIELDS and isinstance(item, str)
            else _renamed(item, mapping)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_renamed(item, mapping) for item in value]
    return value


def colliding_tenants(count: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``count`` envelopes: tenant-1 (A) and tenant-2 (B, on A's ids), in timestamp order."""
    a = list(Simulator(tenants=1, seed=21, start=START, days=DAYS).events(count // 2))
    b = list(Simulator(tenants=1, seed=22, start=START, days=DAYS).events(count - count // 2))
    ids_a: dict[str, dict[str, None]] = defaultdict(dict)
    ids_b: dict[str, dict[str, None]] = defaultdict(dict)
    _ids(a, ids_a)
    _ids(b, ids_b)
    mapping = {
        kind: dict(zip(ids_b[kind], ids_a[kind], strict=False)) for kind in ids_b
    }  # the i-th user (order, product ...) of B becomes the i-th of A
    b = [{**_renamed(d, mapping), "tenant_id": "tenant-2"} for d in b]
    shared = {kind: len(pairs) for kind, pairs in mapping.items()}
    return sorted(a + b, key=lambda d: d["timestamp"]), shared


def reports(engine, tenant: str) -> dict[str, list[dict[str, Any]]]:
    with Session(engine) as session, session.begin():
        return {name: run(session, name, Query(tenant, now=NOW)) for name in REPORTS}


def test_tenants_with_colliding_ids_never_see_each_others_numbers(
    pg, start_worker, start_bridge, redis_url, redis_client, channel_prefix
):
    documents, shared = colliding_tenants(COUNT)
    stamps = [datetime.fromisoformat(d["timestamp"]) for d in documents]
    stream = publishing.build_stream(  # timestamps kept as simulated: days, hours and weeks matter
        documents,
        channel_prefix=channel_prefix,
        start=min(stamps),
        spread=(max(stamps) - min(stamps)) / timedelta(seconds=1),
    )
    tenant_a, tenant_b = stream.tenants
    # B's events even reuse A's event ids (raw events are unique per tenant and id).
    positions: dict[str, list[int]] = defaultdict(list)
    for i, payload in enumerate(stream.payloads):
        positions[orjson.loads(payload)["tenant_id"]].append(i)
    for a_at, b_at in zip(positions[tenant_a], positions[tenant_b], strict=False):
        document = orjson.loads(stream.payloads[b_at])
        document["event_id"] = orjson.loads(stream.payloads[a_at])["event_id"]
        stream.payloads[b_at] = orjson.dumps(document)
    only_a = subset(stream, positions[tenant_a])
    assert shared["order"] > 100 and shared["user"] >= 40 and shared["product"] == 20

    start_worker()
    start_bridge()
    publish(redis_url, only_a)
    settle(pg, only_a, redis_client)
    assert_exact(pg, only_a)
    alone = reports(pg, tenant_a)
    assert sum(map(len, alone.values())) > 100

    truncate_all(pg)
    publish(redis_url, stream)
    settle(pg, stream, redis_client)
    log(
        f"injected: tenant B's {len(positions[tenant_b])} events on tenant A's ids "
        f"({', '.join(f'{n} {kind}' for kind, n in sorted(shared.items()))}; and event ids), "
        f"interleaved with A's {len(positions[tenant_a])} in one stream"
    )
    assert_exact(pg, stream)
    together, other = reports(pg, tenant_a), reports(pg, tenant_b)
    differ = [name for name in REPORTS if together[name] != alone[name]]
    log(
        f"counted: {sum(map(len, alone.values()))} report rows of A alone, "
        f"{sum(map(len, together.values()))} with B; reports of A that changed: {differ or 'none'}"
    )
    assert differ == []
    # B's own numbers are not A's: the ids collide, the data does not.
    assert other["revenue-by-day"] != alone["revenue-by-day"]
    assert other["top-products"] != alone["top-products"]
