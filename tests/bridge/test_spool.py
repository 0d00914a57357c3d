"""The disk spool: what goes in comes back out, byte for byte and in order.

The full-disk tests hit a real file-size limit (``RLIMIT_FSIZE``, so that a write
fails with ``EFBIG`` part way, as one fails with ``ENOSPC`` on a full disk) in a
forked child, so that the limit never applies to the pytest process itself.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import resource
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from bridge.spool import RECORD, Spool


def message(n: int, size: int = 20) -> tuple[bytes, bytes, float, None]:
    return (f"events:t:{n % 7}".encode(), os.urandom(size), 1_700_000_000.0 + n, None)


def test_messages_come_back_in_order_with_their_exact_bytes(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    sent = [message(n, size=n % 50) for n in range(1000)]
    spool.append(sent[:400])
    spool.append(sent[400:])
    assert spool.active and spool.pending == 1000
    got = []
    while not spool.finish_if_empty():
        got += spool.take(4096)
    assert got == sent
    assert not spool.active and spool.pending == 0
    # Nothing is left in the directory: the file was never visible there.
    assert list(tmp_path.iterdir()) == []
    spool.close()


def test_take_stays_within_its_budget_but_always_returns_one(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    small, big, last = message(1), (b"events:x:y", b"z" * 100_000, 1.0, None), message(2)
    spool.append([small, big, last])
    assert spool.take(100, per_message=50) == [small]  # 10 + 20 + 50 fits, the next does not
    # A message larger than the budget (and than the first read) still comes out, alone.
    assert spool.take(10) == [big]
    assert spool.take(10) == [last]
    assert spool.finish_if_empty()
    # Emptied, the file is truncated and the spool is ready to be used again.
    assert os.fstat(spool._fd).st_size == 0
    spool.append([message(3)])
    assert spool.take(1 << 20)[0][2] == 1_700_000_003.0
    spool.close()


def test_a_reader_and_a_writer_on_two_threads_lose_and_reorder_nothing(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    sent = [message(n, size=n % 300) for n in range(30_000)]
    got: list[tuple[bytes, bytes, float, None]] = []
    done = threading.Event()

    def write() -> None:
        for start in range(0, len(sent), 250):
            spool.append(sent[start : start + 250])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not (done.is_set() and spool.finish_if_empty()):
        got += spool.take(16_384, per_message=RECORD.size)
    writer.join()
    assert got == sent
    spool.close()


def in_child_with_file_limit(check: Callable[[int], None]) -> None:
    """Run ``check(limit)`` in a forked child whose files cannot grow past ``limit`` bytes
    (the soft limit: the check may lift it to the hard one); fail with its traceback."""

    def child(conn: Connection) -> None:
        try:
            # Without this, passing the limit kills the process instead of failing the write.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = 64 << 10
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            check(limit)
            conn.send("ok")
        except BaseException:
            conn.send(traceback.format_exc())

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=child, args=(send,))
    process.start()
    send.close()
    outcome = receive.recv() if receive.poll(60) else "no answer from the child in 60 s"
    process.join(10)
    assert outcome == "ok", outcome
    assert process.exitcode == 0


def drain(spool: Spool) -> list[tuple[bytes, bytes, float, None]]:
    got = []
    while not spool.finish_if_empty():
        got += spool.take(8192, per_message=RECORD.size)
    return got


def test_an_append_that_fills_the_disk_part_way_is_undone_and_what_came_before_reads_back(
    tmp_path: Path,
) -> None:
    def check(limit: int) -> None:
        spool = Spool(str(tmp_path))
        before = [message(n, size=300) for n in range(100)]  # ~33 KB, within the limit
        spool.append(before)
        written = os.fstat(spool._fd).st_size
        assert 0 < written < limit
        # ~66 KB: the first write stops at the limit, the next one fails with EFBIG.
        too_much = [message(n, size=600) for n in range(100, 200)]
        try:
            spool.append(too_much)
        except OSError as exc:
            assert exc.errno == errno.EFBIG, exc
        else:
            raise AssertionError("the append past the file-size limit did not fail")
        # Rolled back: the file, the offsets and the counts are those of before.
        assert os.fstat(spool._fd).st_size == written
        assert spool._written == written and spool.pending == 100 and spool.active
        assert drain(spool) == before
        assert not spool.active and spool.pending == 0
        spool.close()

    in_child_with_file_limit(check)


def test_a_failed_append_between_reads_loses_nothing_and_the_spool_goes_on(
    tmp_path: Path,
) -> None:
    def check(limit: int) -> None:
        spool = Spool(str(tmp_path))
        first = [message(n, size=400) for n in range(120)]  # ~51 KB
        spool.append(first)
        got = spool.take(10_000, per_message=RECORD.size)  # the sender is part way
        assert got and got == first[: len(got)]
        failed = [message(n, size=500) for n in range(120, 160)]  # ~21 KB: past the limit
        for _ in range(3):  # a full disk fails every time; each is undone
            try:
                spool.append(failed)
            except OSError as exc:
                assert exc.errno == errno.EFBIG, exc
            else:
                raise AssertionError("the append past the file-size limit did not fail")
        # What still fits goes in after what was there, and reads back in order.
        fits = [message(n, size=10) for n in range(160, 170)]
        spool.append(fits)
        # The limit is lifted (space freed): the batch that failed now goes in whole.
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        spool.append(failed)
        assert spool.pending == len(first) + len(fits) + len(failed) - len(got)
        rest = drain(spool)
        assert got + rest == first + fits + failed
        spool.close()

    in_child_with_file_limit(check)
