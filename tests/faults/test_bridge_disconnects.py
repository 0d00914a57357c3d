"""Fault: Redis drops the bridge's subscription (``CLIENT KILL``) again and again mid-stream.

Pub/sub delivers a message only to those subscribed when it is published: what is
published while a bridge reconnects never reaches it. Two bridges whose
connections never drop at the same moment lose nothing; one bridge loses exactly
what was published in its gaps, and counts everything else once.
"""

from __future__ import annotations

import pytest

from loadgen import checking
from tests.conftest import wait_for
from tests.faults.helpers import (
    Gap,
    Publisher,
    assert_exact,
    broker_backlog,
    forwarded,
    kill_subscription,
    log,
    publish_window,
    settle,
    subset,
)

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

#: Fractions of the stream published when a connection is killed.
MOMENTS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)


def describe(gaps: list[Gap]) -> str:
    return ", ".join(f"{gap.seconds * 1000:.0f} ms" for gap in gaps)


def test_two_bridges_whose_subscriptions_are_killed_in_turn_lose_nothing(
    pg, start_worker, start_bridge, redis_url, redis_client, stream
):
    start_worker()
    bridges = [start_bridge(), start_bridge()]
    publisher = Publisher(redis_url, stream).start()
    gaps = []
    for n, moment in enumerate(MOMENTS):
        publisher.wait_sent(moment)
        # One at a time: the other bridge is subscribed throughout each gap.
        gaps.append(kill_subscription(redis_client, bridges[n % 2]))
    published = publisher.join()
    log(
        f"injected: {len(gaps)} CLIENT KILLs, alternating between two bridges, each "
        f"resubscribed before the next kill; gaps {describe(gaps)}; "
        f"{published.unreceived} events reached no bridge"
    )
    assert published.unreceived == 0
    settle(pg, stream, redis_client)
    assert_exact(pg, stream)
    for bridge in bridges:
        assert bridge.output().count("resubscribed to") == len(MOMENTS) // 2


def test_one_bridge_loses_only_what_was_published_while_its_subscription_was_down(
    pg, start_worker, start_bridge, redis_url, redis_client, stream
):
    start_worker()
    bridge = start_bridge()
    publisher = Publisher(redis_url, stream).start()
    gaps = []
    for moment in MOMENTS:
        publisher.wait_sent(moment)
        gaps.append(kill_subscription(redis_client, bridge))
    published = publisher.join()
    # Everything the bridge read is handed over within a flush; its count lines (one a
    # second) then say how many events it forwarded, all of which must be stored.
    lines = bridge.output().count("last interval:")
    wait_for(lambda: bridge.output().count("last interval:") >= lines + 2, timeout=10)
    handed_over = forwarded(bridge)
    settle(pg, stream, redis_client, expected=handed_over)
    assert not broker_backlog(redis_client)

    stored = [
        stream.index_of(event_id) for event_id, _ in checking.fetch_stored(pg, stream.tenants)
    ]
    assert None not in stored, "an event that was never published is stored"
    positions = {i for i in stored if i is not None}
    assert len(positions) == len(stored) == handed_over
    missing = sorted(set(range(len(stream))) - positions)
    unreceived = set(published.missed)
    outside = [
        i for i in missing if not any(g.overlaps(*publish_window(published, i)) for g in gaps)
    ]
    log(
        f"injected: {len(gaps)} CLIENT KILLs of the one bridge's subscription; gaps "
        f"{describe(gaps)} (the bridge logged {bridge.output().count('resubscribed to')} "
        f"resubscriptions after a gap)"
    )
    log(
        f"counted: {len(positions)} of {len(stream)} events; lost {len(missing)}: "
        f"{len(unreceived)} published while nobody was subscribed, "
        f"{len(set(missing) - unreceived)} in flight on the killed connection; "
        f"{len(outside)} lost outside a gap"
    )
    assert bridge.output().count("resubscribed to") == len(MOMENTS)
    assert "after a gap of" in bridge.output()
    assert unreceived <= set(missing)
    assert outside == [], [publish_window(published, i) for i in outside[:5]]
    # What was counted is exact: each stored event once, its aggregates with it.
    assert_exact(pg, subset(stream, positions), against="forwarded by the bridge")
