"""The disk spool: what goes in comes back out, byte for byte and in order."""

from __future__ import annotations

import os
import threading
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
