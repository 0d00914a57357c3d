"""The workers' metric helpers, in this process (no multiprocess directory)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from tasks import metrics


def test_observe_many_counts_like_as_many_observations():
    registry = CollectorRegistry()
    many = Histogram("many_seconds", "", buckets=(0.1, 1, 10), registry=registry)
    one_by_one = Histogram("one_seconds", "", buckets=(0.1, 1, 10), registry=registry)
    for value, count in ((0.05, 3), (0.5, 4), (20.0, 2)):
        metrics.observe_many(many, value, count)
        for _ in range(count):
            one_by_one.observe(value)
    for suffix, bound in (("bucket", "0.1"), ("bucket", "1.0"), ("bucket", "+Inf")):
        labels = {"le": bound}
        assert registry.get_sample_value(f"many_seconds_{suffix}", labels) == (
            registry.get_sample_value(f"one_seconds_{suffix}", labels)
        )
    assert registry.get_sample_value("many_seconds_count") == 9
    assert registry.get_sample_value("many_seconds_sum") == registry.get_sample_value(
        "one_seconds_sum"
    )


def test_a_committed_batch_is_counted_once_per_outcome():
    def value(name: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(name, labels) or 0.0

    stored = value("analytics_worker_events_stored_total", event_type="order.updated")
    lag = value("analytics_worker_commit_lag_seconds_count")
    items = [["events:order:updated", "{}", 1.0]] * 3 + [["events:order:updated", "{}", 2.0]]
    metrics.record_batch(
        "order.updated", items, {"stored": 3, "duplicates": 1, "dead_letters": 0}, 0.0
    )
    assert value("analytics_worker_events_stored_total", event_type="order.updated") == stored + 3
    assert value("analytics_worker_commit_lag_seconds_count") == lag + 4
