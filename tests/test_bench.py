"""The benchmark's measuring core and `analytics bench`, against real bridge and worker processes.

Tiny scale: the point is that the figures are computed from what really happened
(and that a run which lost events or miscounted fails), not the figures themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from benchmarks import procs
from loadgen import checking, publishing

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_broker")]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pipeline(start_worker, start_bridge):
    """A running bridge and worker (2 pool processes) on this run's database and channels."""
    worker = start_worker()
    bridge = start_bridge()
    return bridge, worker


def stream_for(prefix: str, count: int, rate: float) -> publishing.Stream:
    return publishing.build_stream(
        publishing.simulate(count, tenants=2, seed=7), channel_prefix=prefix, spread=count / rate
    )


# ------------------------------------------------------------------ pure pieces


def test_a_stream_has_unique_ids_that_lead_back_to_their_position() -> None:
    stream = stream_for("x:events", 3_000, 1_000)
    documents = [json.loads(payload) for payload in stream.payloads]
    ids = [document["event_id"] for document in documents]
    assert len(set(ids)) == len(ids) == 3_000
    assert [stream.index_of(event_id) for event_id in ids] == list(range(3_000))
    assert stream.index_of("00000000-0000-0000-0000-000000000000") is None
    assert {document["tenant_id"] for document in documents} == set(stream.tenants)
    assert all(tenant.startswith(f"bench-{stream.run_id}-") for tenant in stream.tenants)
    assert {document["event_type"] for document in documents} == set(
        __import__("loadgen", fromlist=["EVENT_TYPES"]).EVENT_TYPES
    )
    # Another run of the same envelopes collides with nothing.
    again = stream_for("x:events", 3_000, 1_000)
    assert not {json.loads(p)["event_id"] for p in again.payloads} & set(ids)
    assert not set(again.tenants) & set(stream.tenants)


def test_expected_totals_are_what_the_stream_says() -> None:
    stream = stream_for("x:events", 2_000, 1_000)
    documents = [json.loads(payload) for payload in stream.payloads]
    orders = [d for d in documents if d["event_type"] == "order.created"]
    assert stream.expected.total == 2_000
    assert sum(stream.expected.orders.values()) == len(orders) > 0
    cents = sum(round(d["data"]["total_amount"] * 100) for d in orders)
    assert sum(stream.expected.revenue.values()) == cents * 100
    items = {len(d["data"]["items"]) for d in orders}
    assert items <= {1, 2, 3, 4} and len(items) > 1


def test_timestamps_are_squeezed_into_the_publishing_window_in_order() -> None:
    from datetime import datetime

    stream = stream_for("x:events", 1_000, 500)
    stamps = [datetime.fromisoformat(json.loads(p)["timestamp"]) for p in stream.payloads]
    assert (max(stamps) - min(stamps)).total_seconds() == pytest.approx(2.0, abs=0.01)


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert checking.percentile(values, 50) == 50.0
    assert checking.percentile(values, 99) == 99.0
    assert checking.percentile(values, 100) == 100.0
    assert checking.percentile([3.0], 99) == 3.0


def test_peak_rss_of_a_process_tree_includes_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(60_000_000); time.sleep(30)"]
    )
    try:
        import time

        deadline = time.monotonic() + 10
        while (procs.peak_rss(child.pid) or 0) < 60_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        peaks = procs.tree_peak_rss(os.getpid())
        assert child.pid in peaks and os.getpid() in peaks
        assert peaks[child.pid] >= 60_000_000
    finally:
        child.kill()
        child.wait()


def test_killing_a_tree_kills_the_parent_and_its_children() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == b"up"
        tree = procs.process_tree(parent.pid)
        assert len(tree) == 2
        procs.kill_processes(tree, group=parent.pid)
        assert parent.wait(timeout=10) == -9
        import time

        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in tree[1:]):
            assert time.monotonic() < deadline, "the child outlived the kill"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


# ------------------------------------------------------------------ end to end


def test_a_published_stream_is_measured_end_to_end(
    pg: Engine, pipeline, redis_client: redis.Redis, channel_prefix: str
) -> None:
    bridge, _worker = pipeline
    stream = stream_for(channel_prefix, 2_000, 1_000)
    watch_name = f"analytics-bridge-{os.uname().nodename}-{bridge.popen.pid}"
    with procs.ClientWatch(redis_client, watch_name) as watch:
        published = publishing.publish(redis_client, stream, 1_000)
        waited = checking.wait_stored(pg, stream.tenants, len(stream), timeout=120, stall=30)
    assert published.count == 2_000 and published.unreceived == 0
    assert published.rate == pytest.approx(1_000, rel=0.2)
    assert waited.complete, waited.reason

    rows = checking.fetch_stored(pg, stream.tenants)
    assert len(rows) == 2_000
    speed = checking.throughput(published, rows)
    assert 0 < speed.per_second <= published.rate * 1.05
    assert speed.seconds >= 1.5  # 2,000 events at 1,000/s cannot be stored faster
    delay = checking.latency(stream, published, rows)
    assert delay.count == 2_000 and delay.unstamped == 0
    assert 0 < delay.min <= delay.p50 <= delay.p99 <= delay.max < 120

    exact = checking.check_exact(pg, stream)
    assert exact.exact, exact.problems
    assert exact.stored == exact.counted == 2_000 and exact.dead_letters == 0

    assert watch.samples > 0 and watch.ids and not watch.disconnected
    assert watch.max_omem >= 0
    peaks = procs.tree_peak_rss(bridge.popen.pid)
    assert 10 * 2**20 < peaks[bridge.popen.pid] < 2**30


def test_exactness_catches_a_lost_event_and_a_wrong_counter(
    pg: Engine, pipeline, redis_client: redis.Redis, channel_prefix: str
) -> None:
    stream = stream_for(channel_prefix, 300, 1_000)
    published = publishing.publish(redis_client, stream, 0)
    assert checking.wait_stored(pg, stream.tenants, len(stream), timeout=60).complete
    assert checking.check_exact(pg, stream).exact
    tenant = stream.tenants[0]
    with pg.begin() as conn:
        victim = conn.execute(
            text("SELECT event_id FROM events WHERE tenant_id = :t LIMIT 1"), {"t": tenant}
        ).scalar_one()
        conn.execute(
            text("DELETE FROM events WHERE tenant_id = :t AND event_id = :e"),
            {"t": tenant, "e": victim},
        )
        conn.execute(
            text(
                "UPDATE metric_counters SET total = total + 1 WHERE tenant_id = :t "
                "AND metric = 'revenue'"
            ),
            {"t": tenant},
        )
    exact = checking.check_exact(pg, stream)
    assert not exact.exact
    assert any("events stored" in problem for problem in exact.problems)
    assert any("revenue" in problem for problem in exact.problems)
    # A stored id that is missing is not a latency figure either.
    rows = checking.fetch_stored(pg, stream.tenants)
    assert checking.latency(stream, published, rows).count == len(stream) - 1


def test_waiting_for_events_that_never_come_stops_at_the_stall(pg: Engine) -> None:
    result = checking.wait_stored(pg, ["bench-nobody-1"], 10, timeout=30, stall=1, interval=0.1)
    assert not result.complete
    assert "stalled at 0/10" in result.reason
    assert result.waited < 5


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analytics", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_analytics_bench_measures_the_running_pipeline(
    pg: Engine, pipeline, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = run_cli(
        ["bench", "--tenants", "2", "--count", "600", "--rate", "600", "--json", str(out)],
        pipeline_env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored       600/600 (complete)" in done.stdout
    assert "exactness    exact (600 events" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["stored"] == 600 and figures["exactness"]["exact"] is True
    assert figures["throughput"]["per_second"] > 0
    assert 0 < figures["latency"]["p50"] <= figures["latency"]["p99"] < 60
    # The events went to tenants of the benchmark's own, in the configured database.
    with pg.connect() as conn:
        tenants = conn.execute(text("SELECT DISTINCT tenant_id FROM events")).scalars().all()
    assert sorted(tenants) == sorted(figures["tenants"])
    assert all(t.startswith("bench-") for t in tenants)


def test_analytics_bench_cleanup_removes_the_bench_tenants(
    pg: Engine, pipeline, pipeline_env: dict[str, str]
) -> None:
    done = run_cli(["bench", "--count", "200", "--rate", "0", "--cleanup"], pipeline_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cleanup      deleted" in done.stdout
    with pg.connect() as conn:
        for table in ("events", "metric_counters", "user_activity", "orders"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


def test_analytics_bench_without_a_bridge_fails_saying_so(
    pg: Engine, pipeline_env: dict[str, str]
) -> None:
    done = run_cli(["bench", "--count", "10"], pipeline_env)
    # Other subscribers on the shared Redis may exist; then the events reach no bridge
    # of this run and the wait stalls instead. Either way: non-zero, and it says why.
    if "nobody is subscribed" in done.stderr:
        assert done.returncode == 1
        return
    env = {**pipeline_env}
    done = run_cli(["bench", "--count", "10", "--stall", "2", "--timeout", "5"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    if "nobody is subscribed" in done.stderr:  # the other subscribers went away meanwhile
        return
    assert "reached no subscriber" in done.stderr
    assert "stalled at 0/10" in done.stdout or "timed out" in done.stdout


def test_send_cost_prints_a_round_a_line_and_leaves_its_db_empty(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import send_cost
    from tests.conftest import REDIS_DB

    redis_client.set("left-over", "1")
    assert (
        send_cost.main(
            ["--sends", "5", "--events", "3", "--rounds", "2", "--redis-db", str(REDIS_DB)]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["round 1", "round 2"]
    assert all("ms CPU a send" in line and "(5 batches of 3)" in line for line in lines)
    assert redis_client.dbsize() == 0


def test_the_serializer_benchmark_checks_both_texts_and_prints_each_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks import serializer

    assert serializer.main(["--events", "600", "--batch", "50", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "600 events in" in out
    for row in ("write (bridge)", "read (each of the worker's two reads)", "one write and two"):
        (line,) = [line for line in out.splitlines() if row in line]
        before, after = (float(figure) for figure in line.split()[-2:])
        assert before > 0 and after > 0


def test_the_statement_benchmark_prints_both_ways_for_each_row_count(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import statement_cost

    argv = ["--statements", "20", "--rounds", "1", "--rows", "1", "3", "--url", postgres_url]
    assert statement_cost.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["1", "3"]
    assert all(float(figure) > 0 for row in rows for figure in row[1:])


def test_the_staging_benchmark_prints_a_commits_cost_for_each_count_of_tables(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import staging_cost

    argv = ["--tables", "0", "2", "--commits", "20", "--rounds", "1", "--url", postgres_url]
    assert staging_cost.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "2"]
    assert all(float(row[1]) >= 0 for row in rows)


def test_the_raw_rows_benchmark_prints_both_ways_for_each_batch_size_and_restores_copy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from analytics import db
    from benchmarks import raw_rows

    before = db.COPY_MIN_ROWS
    assert raw_rows.main(["--batch", "10", "30", "--events", "120", "--warm", "30"]) == 0
    assert before == db.COPY_MIN_ROWS
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [
        ["10", "COPY"], ["10", "arrays"], ["30", "COPY"], ["30", "arrays"],
    ]  # fmt: skip
    assert all(float(figure) > 0 for row in rows for figure in row[2:])


@pytest.mark.parametrize("shape", [[], ["--mixed"]])
def test_the_packing_benchmark_hands_the_pool_the_same_items_and_prints_each_process(
    shape: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import packing

    assert packing.main(["--events", "600", "--batch", "50", "--repeat", "1", *shape]) == 0
    out = capsys.readouterr().out
    assert "600 events in" in out
    figures = {}
    for row in ("bridge (ledger", "main process", "pool process", "in all", "piped", "in Redis"):
        (line,) = [line for line in out.splitlines() if row in line]
        figures[row] = [float(figure) for figure in line.split()[-2:]]
        assert all(figure > 0 for figure in figures[row])
    # Packed, the main process pipes the compressed batch, not its JSON.
    items, packed = figures["piped"]
    assert packed * 3 < items


def _claimed_by_another(client: redis.Redis) -> str:
    """A claim on ``client``'s database held by a live process of this host (our parent)."""
    import socket

    from benchmarks.claim import CLAIM_KEY

    held = f"{socket.gethostname()} {os.getppid()} another benchmark"
    client.set(CLAIM_KEY, held)
    return held


def test_a_redis_db_another_running_benchmark_holds_is_refused_and_left_as_it_is(
    redis_client: redis.Redis, fresh_broker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two benchmarks on one database wreck each other: each empties it at its start and
    # end, deleting the other's queued batches (the other then stalls and reports loss).
    from benchmarks import pipeline, send_cost
    from benchmarks.claim import CLAIM_KEY, DatabaseInUse, claim
    from tests.conftest import REDIS_DB

    held = _claimed_by_another(redis_client)
    redis_client.set("the-other-benchmarks-queue", "1")
    with pytest.raises(DatabaseInUse, match=rf"database {REDIS_DB} is in use .*--redis-db N"):
        claim(redis_client, "a test")
    assert pipeline.main(["--only", "cpu", "--redis-db", str(REDIS_DB)]) == 2
    assert "is in use by another benchmark (another benchmark" in capsys.readouterr().err
    with pytest.raises(DatabaseInUse):
        send_cost.main(["--sends", "1", "--events", "1", "--redis-db", str(REDIS_DB)])
    assert redis_client.get("the-other-benchmarks-queue") == b"1"
    assert redis_client.get(CLAIM_KEY) == held.encode()


def test_a_claim_left_by_a_process_that_is_gone_is_taken_over(
    redis_client: redis.Redis, fresh_broker: None
) -> None:
    import socket

    from benchmarks.claim import CLAIM_KEY, claim

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    redis_client.set(CLAIM_KEY, f"{socket.gethostname()} {gone.stdout.strip()} a crashed run")
    claim(redis_client, "a test")
    assert redis_client.get(CLAIM_KEY) == f"{socket.gethostname()} {os.getpid()} a test".encode()
