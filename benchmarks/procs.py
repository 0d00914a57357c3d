"""Observing the benchmarked processes from the outside (Linux /proc and Redis).

:class:`ClientWatch` samples ``CLIENT LIST`` for a subscriber's output buffer
(``omem``) and reconnects, :class:`RedisLog` reads what Redis logged about closing
clients, :func:`tree_peak_rss` reads ``VmHWM`` of a process and its children
(prefork workers) from /proc, :func:`cpu_seconds` / :func:`machine_cpu` say where
the CPU went, and :func:`kill_processes` stops what a benchmark or test started.
Used by the benchmarks and the tests only; nothing in the product imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------ Redis clients


def clients_named(client: Any, prefix: str) -> list[dict[str, Any]]:
    """``CLIENT LIST`` entries whose name starts with ``prefix``."""
    return [
        entry for entry in client.client_list() if str(entry.get("name", "")).startswith(prefix)
    ]


class ClientWatch:
    """Samples ``CLIENT LIST`` in a thread: a subscriber's largest output buffer, and reconnects.

    A connection Redis closed (output buffer over the pub/sub limit) either
    disappears from the list or comes back with a new client id: both count.
    """

    def __init__(self, client: Any, name_prefix: str, interval: float = 0.1):
        self.client = client
        self.name_prefix = name_prefix
        self.interval = interval
        self.max_omem = 0
        self.max_oll = 0
        self.samples = 0
        self.absent = 0
        self.ids: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-watch", daemon=True)

    def start(self) -> ClientWatch:
        self._thread.start()
        return self

    def stop(self) -> ClientWatch:
        self._stop.set()
        self._thread.join()
        return self

    def __enter__(self) -> ClientWatch:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def sample(self) -> None:
        entries = clients_named(self.client, self.name_prefix)
        self.samples += 1
        if not entries:
            if self.ids:
                self.absent += 1
            return
        for entry in entries:
            self.max_omem = max(self.max_omem, int(entry.get("omem", 0)))
            self.max_oll = max(self.max_oll, int(entry.get("oll", 0)))
            client_id = str(entry.get("id"))
            if client_id not in self.ids:
                self.ids.append(client_id)

    @property
    def disconnected(self) -> bool:
        """Whether the watched connection went away or was replaced while watched."""
        return self.absent > 0 or len(self.ids) > 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a failed sample must not end the watch
                self.errors += 1
            self._stop.wait(self.interval)


class RedisLog:
    """New lines of the Redis server log since this object was made (when it is readable)."""

    MARKER = "output buffer limits"

    def __init__(self, client: Any):
        self.path: Path | None = None
        self.offset = 0
        try:
            configured = client.config_get("logfile").get("logfile", "")
        except Exception:  # CONFIG may be disabled on a managed Redis
            configured = ""
        if configured:
            path = Path(configured)
            if path.is_file() and os.access(path, os.R_OK):
                self.path = path
                self.offset = path.stat().st_size

    @property
    def readable(self) -> bool:
        return self.path is not None

    def new_lines(self) -> list[str]:
        if self.path is None:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode("utf-8", "replace").splitlines()

    def buffer_disconnects(self, name_prefix: str) -> list[str]:
        """Lines where Redis closed a client named ``name_prefix...`` for its output buffer."""
        return [
            line
            for line in self.new_lines()
            if self.MARKER in line and f"name={name_prefix}" in line
        ]


def redis_disconnect_counter(client: Any) -> int | None:
    """``client_output_buffer_limit_disconnections`` (Redis 7.4+), None on older servers."""
    value = client.info("stats").get("client_output_buffer_limit_disconnections")
    return None if value is None else int(value)


# ----------------------------------------------------------------------- processes


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc/<pid>/task/*/children, else a scan)."""
    found: list[int] = []
    listed = False
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
            listed = True
        except OSError:
            continue
    if listed:
        return found
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        if not Path(f"/proc/{current}").exists():
            continue
        tree.append(current)
        pending += children_of(current)
    return tree


def kill_processes(pids: Iterable[int], group: int) -> None:
    """SIGKILL each of ``pids`` still running, then every process of the group ``group``.

    Pass the pids of a tree read before its parent exited: once the parent is gone,
    its children are no longer found under it.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``) in bytes; None if it is gone."""
    value = _status(pid).get("VmHWM")
    if value is None:
        return None
    return int(value.split()[0]) * 1024


def tree_peak_rss(pid: int) -> dict[int, int]:
    """Peak RSS of ``pid`` and of each of its descendants (prefork pool processes)."""
    peaks: dict[int, int] = {}
    for member in process_tree(pid):
        peak = peak_rss(member)
        if peak is not None:
            peaks[member] = peak
    return peaks


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds the processes used so far (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) of every process on the machine."""
    table: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = raw.rpartition(")")
        fields = rest.split()
        if len(fields) < 13:
            continue
        name = head.split("(", 1)[-1]
        table[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _TICKS, total / _TICKS
