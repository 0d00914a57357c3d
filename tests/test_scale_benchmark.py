"""The scale benchmark's own measures: the WAL a load writes, and a tiny whole run."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from benchmarks import scale


def test_the_wal_meter_counts_what_was_written_while_it_ran_only(pg: Engine) -> None:
    wal = scale.WalMeter(pg)
    wal.resume()
    with pg.begin() as conn:
        conn.execute(
            text("CREATE TABLE wal_probe_logged AS SELECT n, repeat('x', 200) AS pad "
                 "FROM generate_series(1, 5000) AS n")
        )  # fmt: skip
    wal.pause()
    written = wal.bytes
    try:
        # 5,000 rows of ~230 bytes: at least their size went to the WAL.
        assert written >= 5_000 * 200
        # Paused, it counts nothing more.
        with pg.begin() as conn:
            conn.execute(text("INSERT INTO wal_probe_logged SELECT * FROM wal_probe_logged"))
        wal.pause()
        assert wal.bytes == written
    finally:
        with pg.begin() as conn:
            conn.execute(text("DROP TABLE wal_probe_logged"))


def test_a_tiny_run_prints_reports_storage_and_wal_per_event(capsys) -> None:
    assert scale.main(["--max", "3000", "--checkpoints", "3000", "--repeat", "1",
                       "--users", "200", "--days", "20", "--batch", "500"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "== checkpoint: 3,000 events stored" in out
    assert "revenue-by-day" in out and "retention" in out
    # Each progress line says what the writer cost since the last one, by side.
    stretches = [
        re.search(r"last ([\d,]+): ([\d,]+)/s while storing, python ([\d,]+) us and "
                  r"postgres ([\d,]+) us an event; WAL ([\d,]+) bytes, ([\d.]+) full pages "
                  r"and ([\d.]+) blocks read an event; (\d+) checkpoints", line)
        for line in out.splitlines() if line.startswith("loaded ")
    ]  # fmt: skip
    assert len(stretches) >= 5 and all(stretches), out
    figures = [[float(g.replace(",", "")) for g in m.groups()] for m in stretches if m]
    assert sum(events for events, *_ in figures) == 3000
    assert all(rate > 0 and python > 0 for _, rate, python, *_ in figures)
    # Every event stored writes WAL: its raw row at least (~1 KB).
    assert all(wal > 300 for *_, wal, _, _, _ in figures), out
    assert sum(postgres for _, _, _, postgres, *_ in figures) > 0
    wal_line = next(line for line in out.splitlines() if line.startswith("WAL written"))
    assert int(wal_line.split()[5]) > 100  # bytes an event: the raw row alone is more


def test_the_stock_history_benchmark_times_both_ways_and_checks_the_alerts(capsys) -> None:
    from benchmarks import stock_history

    argv = ["--products", "4", "--history", "30", "300", "--keys", "2", "--batches", "4"]
    assert stock_history.main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "movements a product:" in line]
    assert [line.split()[0] for line in lines] == ["30", "300"]
    for line in lines:
        assert line.endswith("exact"), out
        figures = re.search(r"since restock +([\d.]+) ms .*whole +([\d.]+) ms", line)
        assert figures and float(figures[2]) > 0, line


def test_stored_keys_come_first_and_take_none_of_the_streams_events(capsys) -> None:
    assert scale.main(["--max", "1000", "--checkpoints", "1000", "--repeat", "1", "--users", "100",
                       "--days", "5", "--batch", "500", "--stored-keys", "700"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert re.search(r"stored 700 event keys first \([\d,]+ MiB\)", out), out
    # Every event of the stream is still new: the stored keys are none of its ids.
    assert "loaded 1,000 events (1,000 stored)" in out, out
