"""Fault: the whole stream is published a second time after it settled (a replayed export,
a producer that re-sends everything). Nothing may change."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.faults.helpers import assert_exact, dump, forwarded, log, publish, settle

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]


def test_replaying_the_whole_stream_after_it_settled_changes_no_row_of_any_table(
    pg, start_worker, start_bridge, redis_url, redis_client, stream
):
    start_worker()
    bridge = start_bridge()
    publish(redis_url, stream)
    settle(pg, stream, redis_client)
    assert_exact(pg, stream)
    before = dump(pg)

    replayed = publish(redis_url, stream)
    assert replayed.unreceived == 0
    wait_for(
        lambda: forwarded(bridge) >= 2 * len(stream),
        timeout=30,
        what="the bridge to hand the replay over",
    )
    settle(pg, stream, redis_client)  # and the broker empty: every replayed batch ran
    after = dump(pg)
    rows = sum(map(len, before.values()))
    log(
        f"injected: the same {len(stream)} events published again after they settled "
        f"(the bridge forwarded {forwarded(bridge)} in all)"
    )
    changed = {
        table: (
            [row for row in before[table] if row not in after[table]][:3],
            [row for row in after[table] if row not in before[table]][:3],
        )
        for table in before
        if before[table] != after[table]
    }
    log(
        f"counted: {rows} rows in {len(before)} tables before the replay, "
        f"{sum(map(len, after.values()))} after; tables that changed: {sorted(changed) or 'none'}"
    )
    assert changed == {}, changed
    assert rows > len(stream)  # the dump saw the aggregates, not only the raw events
    assert_exact(pg, stream)
