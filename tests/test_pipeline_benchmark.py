"""The pipeline benchmark's own bookkeeping: where CPU went, and partial runs."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import orjson

from benchmarks import pipeline
from loadgen import publishing


def test_cpu_is_split_by_role_and_the_roles_add_up_to_the_pipeline() -> None:
    before = {1: ("python", 1.0), 2: ("python", 0.0), 3: ("python", 0.0), 9: ("postgres", 0.0)}
    after = {
        1: ("python", 3.0),  # bridge: 2 s
        2: ("python", 1.0),  # worker main: 1 s
        3: ("python", 4.0),  # worker pool: 4 s
        9: ("postgres", 2.0),
        7: ("other", 1.0),
    }
    cpu, others = pipeline.cpu_breakdown(
        before,
        after,
        busy=12.0,
        wall=4.0,
        pipeline={1, 2, 3},
        postgres={9},
        redis_pid=0,
        roles={1: "bridge", 2: "worker main", 3: "worker pool"},
    )
    assert cpu["pipeline_cores"] == 7.0 / 4
    assert (cpu["bridge_cores"], cpu["worker_main_cores"], cpu["worker_pool_cores"]) == (
        0.5,
        0.25,
        1.0,
    )
    assert cpu["postgres_cores"] == 0.5
    assert cpu["other_cores"] == 0.25
    assert cpu["unattributed_cores"] == (12.0 - 10.0) / 4
    assert others == "other 0.25"


def _run(label: str, **fields: object) -> pipeline.Run:
    values: dict[str, object] = dict(
        label=label,
        events=20_000,
        offered_rate=1_000.0,
        publish_rate=1_000.0,
        complete=True,
        wait="all stored",
        exact=True,
        exactness="exact",
        verdict="exact",
        throughput=1_000.0,
        seconds=20.0,
        latency={k: 0.1 for k in ("p50", "p90", "p99", "max", "min", "mean")},
        commit_lag_mean=0.0,
        commit_lag_rows=0,
        unreceived=0,
    )
    values.update(fields)
    return pipeline.Run(**values)  # type: ignore[arg-type]


def test_a_partial_run_reports_only_its_phases_and_says_it_is_partial() -> None:
    plan = pipeline.Plan(phases=("latency",))
    results = pipeline.Results(plan=plan, machine={"cores": 2})
    results.latency = _run("latency at 1,000/s", cpu={"bridge_cores": 0.14})
    report, passed = pipeline.table(results)
    assert passed
    assert "only latency: not the full verdict" in report
    assert "sustained throughput" not in report
    assert "bridge 0.14" in report
    assert "busy loop" not in report
    results.contended = _run(
        "latency at 1,000/s beside 1 busy loop(s)",
        latency={"p99": 0.75, "p50": 0.1, "p90": 0.2, "max": 1.0},
        cpu={"other_cores": 0.98},
    )
    report, passed = pipeline.table(results)
    assert passed  # reported, not a target
    assert "beside 1 busy loop(s) (a slower machine)" in report and "p99 750 ms" in report
    assert "busy loops 0.98 cores" in report
    results.latency = _run(
        "latency at 1,000/s", latency={"p99": 0.9, "p50": 0.1, "p90": 0.2, "max": 1.0}
    )
    report, passed = pipeline.table(results)
    assert not passed and "FAIL" in report
    assert math.isnan(pipeline.median_of([]))


def test_more_processes_are_judged_against_the_runs_interleaved_with_them() -> None:
    plan = pipeline.Plan(phases=("sustained", "scaled"))
    results = pipeline.Results(plan=plan, machine={"cores": 2})
    results.sustained = [_run("2 proc", throughput=t) for t in (13_000.0, 13_100.0, 13_200.0)]
    results.scaled = [_run("4 proc", throughput=t) for t in (11_900.0, 12_000.0, 12_100.0)]
    results.paired = [_run("2 proc paired", throughput=t) for t in (11_950.0, 12_300.0, 12_500.0)]
    report, passed = pipeline.table(results)
    assert passed, report
    assert "interleaved with them: median 12,300" in report
    # Slower than every run beside it: it fails.
    results.paired = [_run("2 proc paired", throughput=t) for t in (12_050.0, 12_300.0, 12_500.0)]
    report, passed = pipeline.table(results)
    assert not passed
    # Without interleaved runs, the first phase's runs are the reference.
    results.paired = []
    assert not pipeline.table(results)[1]


def _cpu_run(
    rate: float, events: int, tasks: int, seconds: float, **fields: object
) -> pipeline.Run:
    """A run whose counted CPU is ``seconds`` over 10 s of wall (the publisher not counted)."""
    cores = seconds / 10.0
    cpu = {"bridge_cores": cores / 2, "worker_pool_cores": cores / 2, "benchmark_cores": 0.3}
    return _run(
        f"cpu at {rate:,.0f}/s",
        offered_rate=rate,
        events=events,
        tasks=tasks,
        cpu=cpu,
        cpu_wall=10.0,
        **fields,
    )


def test_the_fit_recovers_the_cost_of_a_task_and_of_an_event() -> None:
    a, b = 0.008, 150e-6
    runs = [
        _cpu_run(rate, events, tasks, a * tasks + b * events + 0.02 * 10.0)
        for rate, events, tasks in ((200, 2_000, 600), (500, 5_000, 700), (2_000, 20_000, 800))
    ]
    # 0.02 cores of idle CPU are taken off before fitting; the publisher is never counted.
    fitted_a, fitted_b, worst = pipeline.fit_cost(runs, idle_cores=0.02)
    assert math.isclose(fitted_a, a, rel_tol=1e-9) and math.isclose(fitted_b, b, rel_tol=1e-9)
    assert worst < 1e-9
    assert math.isclose(pipeline.cpu_per_event(runs[0]), (a * 600 + b * 2_000 + 0.2) / 2_000)
    assert math.isnan(pipeline.fit_cost(runs[:1], 0.0)[0])


def test_cpu_per_event_is_judged_at_500_and_2000_events_per_second_with_its_p99() -> None:
    plan = pipeline.Plan(phases=("cpu",))
    results = pipeline.Results(plan=plan, machine={"cores": 2})
    results.idle = {"redis_cores": 0.01, "counted_cores": 0.01}
    results.cpu_runs = [
        _cpu_run(200, 2_000, 400, 2.0),  # 1,000 us an event: reported, no target
        _cpu_run(500, 5_000, 100, 1.4),  # 280 us
        _cpu_run(2_000, 20_000, 200, 4.8),  # 240 us
    ]
    report, passed = pipeline.table(results)
    assert passed, report
    assert re.search(
        r"CPU per event at 200 ev/s, all counted +1,000 us \(0\.20 cores; 400 tasks", report
    )
    assert "idle CPU, no traffic" in report and "redis 0.010" in report
    assert "a = " in report and "ms per task" in report
    # 0.3 cores of publisher over 10 s: 1,500 us an event at 200/s, 600 at 500, 150 at 2,000.
    assert "200/s 1,500 us, 500/s 600 us, 2,000/s 150 us: the same work" in report
    slow = {"p99": 0.3, "p50": 0.1, "p90": 0.2, "max": 0.4}
    results.cpu_runs[1] = _cpu_run(500, 5_000, 100, 1.4, latency=slow)
    assert not pipeline.table(results)[1]
    results.cpu_runs[1] = _cpu_run(500, 5_000, 100, 1.6)  # 320 us
    assert not pipeline.table(results)[1]


def test_twice_the_throughput_is_judged_on_the_live_and_the_replay_stream() -> None:
    plan = pipeline.Plan(phases=("sustained", "baseline", "replay"))
    results = pipeline.Results(plan=plan, machine={"cores": 2})
    results.sustained = [_run("live", throughput=t) for t in (20_500.0, 21_000.0, 19_000.0)]
    results.baseline = _run("seed-style", throughput=2_000.0)
    # Without a replay phase, the rows are not judged (older runs, --only sustained).
    assert "twice the throughput" not in pipeline.table(results)[0]
    results.replay = [_run("replay", throughput=t) for t in (15_200.0, 16_000.0, 14_000.0)]
    report, passed = pipeline.table(results)
    assert passed, report
    assert re.search(
        r"replay stream \(4 tenants x 2,200 users, 10 days; median of 3\) +15,200", report
    )
    assert re.search(r"slower than the live stream by +10\.2x", report)
    results.baseline = _run("seed-style", throughput=2_500.0)  # 8.4x: not ten times slower
    assert not pipeline.table(results)[1]
    results.baseline = _run("seed-style", throughput=2_000.0)
    results.replay[0] = _run("replay", throughput=15_200.0, exact=False)
    assert not pipeline.table(results)[1]
    results.replay = [_run("replay", throughput=t) for t in (14_900.0, 16_000.0, 14_000.0)]
    assert not pipeline.table(results)[1]
    results.sustained = [_run("live", throughput=t) for t in (19_900.0, 21_000.0, 19_000.0)]
    results.replay = [_run("replay", throughput=16_000.0)]
    report, passed = pipeline.table(results)
    assert not passed and re.search(r"live stream \(median, the sustained runs\) +19,900", report)


def test_the_replay_stream_spans_past_days_with_many_users_per_tenant() -> None:
    envelopes = publishing.simulate_replay(3_000, tenants=4, users=300, days=10, seed=5)
    start = datetime.now(UTC) - timedelta(days=10, hours=1)
    stream = publishing.build_stream(
        envelopes, channel_prefix="x:events", spread=10 * 86_400.0, start=start
    )
    documents = [orjson.loads(payload) for payload in stream.payloads]
    days = {document["timestamp"][:10] for document in documents}
    users = {(d["tenant_id"], d["user_id"]) for d in documents if d.get("user_id")}
    assert len(stream.tenants) == 4
    assert len(days) >= 10
    assert len(users) > 4 * 100
    assert max(d["timestamp"] for d in documents) < datetime.now(UTC).isoformat()
