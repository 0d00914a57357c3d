"""Beat: two at once send once, a killed one is replaced in time, and what beat sends is idempotent.

Real `analytics beat` processes with a short interval (ROLLUP_INTERVAL=1) and a short
lock (BEAT_LOCK_TIMEOUT=5: a standby tries every second), each test with its own
key prefix in the run's Redis DB.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from analytics import rollups
from analytics.models import ActiveUsersDaily, Alert
from tasks.app import app as celery_app
from tasks.queues import (
    RETENTION_PARTITIONS_TASK,
    ROLLUP_CLOSE_DAY_TASK,
    ROLLUP_REFRESH_TASK,
)
from tests.analytics.helpers import apply, make
from tests.conftest import REDIS_BASE, wait_for

INTERVAL = 1.0
LOCK_TIMEOUT = 5.0
#: How long after its last renewal a dead beat's lock can stand, plus a standby's poll.
TAKEOVER = LOCK_TIMEOUT + LOCK_TIMEOUT / 5
SENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \[celery.beat\] "
    r"Scheduler: Sending due task rollups-refresh",
    re.MULTILINE,
)


@pytest.fixture(autouse=True)
def fresh_broker(redis_client):
    """Set up first, torn down last: no task message outlives its test's workers."""
    yield
    redis_client.flushdb()


@pytest.fixture
def beat_env(pipeline_env: dict[str, str]) -> dict[str, str]:
    return {
        **pipeline_env,
        "ROLLUP_INTERVAL": str(INTERVAL),
        "BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
    }


def sends(process: Any) -> list[datetime]:
    """When a beat sent rollups.refresh, from its own log."""
    return [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in SENT.findall(process.output())]


def test_beat_sends_only_idempotent_rollups():
    # Beat may run twice for the same moment around a takeover (a send, then the
    # lock expires before it is recorded): every entry must be safe to repeat.
    # rollups.refresh and rollups.close_day recompute windows and upsert them;
    # retention.partitions creates what is missing (retention.prune, scheduled only
    # with RAW_RETENTION_DAYS, finds nothing left the second time: tests/analytics/
    # test_retention.py).
    tasks = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert tasks == {ROLLUP_REFRESH_TASK, ROLLUP_CLOSE_DAY_TASK, RETENTION_PARTITIONS_TASK}
    assert celery_app.conf.beat_scheduler == "tasks.beat:Scheduler"


def rollup_rows(engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with Session(engine) as session:
        active = session.execute(
            select(
                ActiveUsersDaily.tenant_id,
                ActiveUsersDaily.day,
                ActiveUsersDaily.dau,
                ActiveUsersDaily.wau,
                ActiveUsersDaily.mau,
            ).order_by(ActiveUsersDaily.tenant_id, ActiveUsersDaily.day)
        ).all()
        alerts = session.execute(
            select(
                Alert.tenant_id,
                Alert.alert_key,
                Alert.alert_type,
                Alert.created_at,
                Alert.resolved_at,
                Alert.message,
            ).order_by(Alert.tenant_id, Alert.alert_key)
        ).all()
    return [tuple(r) for r in active], [tuple(r) for r in alerts]


@pytest.mark.slow
@pytest.mark.fault
def test_two_beats_at_once_send_once_and_the_rollups_equal_a_single_run(
    pg, start_worker, start_process, beat_env
):
    tenant = "two-beats"
    events = [
        make("user.logged_in", {}, f"2024-03-0{day}T10:00:00Z", tenant_id=tenant, user_id=user)
        for day in (4, 5, 6)
        for user in ("u1", "u2", f"only-{day}")
    ]
    # 12 of 30 payments in one hour fail: the payment-failure alert opens once.
    events += [
        make(kind, {"payment_id": f"p{n}"}, f"2024-03-05T09:{n:02d}:00Z", tenant_id=tenant)
        for n, kind in enumerate(["payment.failed"] * 12 + ["payment.processed"] * 18)
    ]
    apply(pg, events)
    worker = start_worker("-Q", "rollups", concurrency=1, env=beat_env)
    first = start_process("beat", ["beat"], beat_env)
    second = start_process("beat", ["beat"], beat_env)
    wait_for(lambda: len(sends(first)) + len(sends(second)) >= 6, timeout=60, what="6 sends")
    active, standby = (first, second) if sends(first) else (second, first)
    # The standby first: stopped the other way round, it would take over and send.
    assert standby.stop() == 0
    assert active.stop() == 0
    sent = sends(active)
    window = (sent[-1] - sent[0]).total_seconds()
    print(f"\none beat sent {len(sent)} refreshes in {window:.1f}s; the other sent nothing")
    assert sends(standby) == []
    assert "beat: Acquired lock" not in standby.output()
    # One beat's worth: a send per interval, not two.
    assert len(sent) <= window / INTERVAL + 2

    def finished() -> int:
        return len(re.findall(r"Task rollups\.refresh\[\S+\] succeeded", worker.output()))

    wait_for(lambda: finished() >= 2, timeout=30, what="the worker to run refreshes")
    assert finished() <= len(sent)
    by_beats = rollup_rows(pg)
    assert len([a for a in by_beats[1] if a[2] == rollups.PAYMENT_ALERT]) == 1
    # What one refresh alone leaves behind, computed in this process from scratch.
    with Session(pg) as session, session.begin():
        session.execute(delete(ActiveUsersDaily))
        session.execute(delete(Alert))
        rollups.recompute(session, date(2024, 3, 4), date(2024, 3, 4) + timedelta(days=31))
        rollups.payment_alerts(session, tenant)
    assert rollup_rows(pg) == by_beats


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_beat_is_replaced_by_the_standby_within_the_lock_timeout(start_process, beat_env):
    first = start_process("beat", ["beat"], beat_env)
    first.wait_for_output("Sending due task rollups-refresh")
    second = start_process("beat", ["beat"], beat_env)
    second.wait_for_output("beat: Starting...")
    wait_for(lambda: len(sends(first)) >= 3, timeout=30, what="the first beat to send")
    os.killpg(first.popen.pid, signal.SIGKILL)
    first.popen.wait()
    last_before = sends(first)[-1]
    second.wait_for_output("Sending due task rollups-refresh", timeout=3 * TAKEOVER)
    first_after = sends(second)[0]
    gap = (first_after - last_before).total_seconds()
    print(f"\nrollups.refresh sent {gap:.2f}s apart across the kill (bound {TAKEOVER + INTERVAL}s)")
    # The dead beat's lock expires LOCK_TIMEOUT after its last renewal; the standby
    # tries every LOCK_TIMEOUT / 5 and the entry is overdue by then, so it goes at once.
    assert gap <= TAKEOVER + INTERVAL + 1.0
    wait_for(lambda: len(sends(second)) >= 3, timeout=10, what="the standby to keep sending")
    assert "beat: Acquired lock" in second.output()


@pytest.mark.slow
@pytest.mark.fault
def test_a_beat_whose_lock_and_schedule_vanished_takes_them_again(
    start_process, beat_env, redis_client
):
    # What a Redis restart without persistence does: the lock and every entry are gone.
    beat = start_process("beat", ["beat"], beat_env)
    wait_for(lambda: len(sends(beat)) >= 2, timeout=30, what="beat to send")
    keys = list(redis_client.scan_iter(match=beat_env["BEAT_KEY_PREFIX"] + "*"))
    assert any(key.endswith(b"::lock") for key in keys)
    redis_client.delete(*keys)
    beat.wait_for_output("beat: lost the lock")
    before = len(sends(beat))
    wait_for(lambda: len(sends(beat)) >= before + 2, timeout=3 * TAKEOVER, what="sends again")
    assert beat.output().count("beat: Acquired lock") == 2
    assert beat.alive
    assert beat.stop() == 0


class CuttableProxy:
    """A TCP relay to Redis whose connections can be cut and refused for a while."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.cut_off = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self) -> None:
        self.cut_off.set()
        for end in self.open:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def restore(self) -> None:
        self.cut_off.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.slow
@pytest.mark.fault
def test_a_beat_cut_off_from_redis_sends_nothing_and_resumes_when_it_is_back(
    start_process, beat_env
):
    # Only beat's own Redis connection goes through the proxy; the broker does not.
    host, port = REDIS_BASE.rsplit("/", 1)[-1].split(":")
    proxy = CuttableProxy((host, int(port)))
    db = beat_env["REDIS_URL"].rsplit("/", 1)[1]
    try:
        env = {**beat_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}"}
        beat = start_process("beat", ["beat"], env)
        wait_for(lambda: len(sends(beat)) >= 2, timeout=30, what="beat to send")
        proxy.cut()
        beat.wait_for_output("beat: Redis unreachable", timeout=30)
        cut_at = len(sends(beat))
        time.sleep(3)
        assert len(sends(beat)) <= cut_at + 1  # at most a send already under way
        proxy.restore()
        wait_for(lambda: len(sends(beat)) >= cut_at + 3, timeout=3 * TAKEOVER, what="sends again")
        assert beat.alive
        assert beat.stop() == 0
    finally:
        proxy.close()
