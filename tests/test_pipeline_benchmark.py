"""The pipeline benchmark's own bookkeeping: where CPU went, and partial runs."""

from __future__ import annotations

import math

from benchmarks import pipeline


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
