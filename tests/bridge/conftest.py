"""Bridge fixtures: a bridge running in a thread of the test, handing its batches to a recorder."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from analytics.config import Settings
from bridge.relay import Bridge


@dataclasses.dataclass
class Recorder:
    """A ``send`` that keeps every batch: it can fail its first calls, fail while told to
    (every task, or only the task ``only``), and take ``seconds_per_event`` per event it
    is handed (a slow broker)."""

    fail_first: int = 0
    failing: threading.Event = dataclasses.field(default_factory=threading.Event)
    only: str | None = None
    seconds_per_event: float = 0.0
    batches: list[tuple[str, str, list[list[Any]], float]] = dataclasses.field(default_factory=list)
    #: The ``by_type`` each batch came with (None unless mixed), in step with ``batches``.
    kinds: list[dict[str, int] | None] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def __call__(
        self,
        task: str,
        queue: str,
        items: list[list[Any]],
        *,
        by_type: dict[str, int] | None = None,
    ) -> None:
        if self.seconds_per_event:
            time.sleep(self.seconds_per_event * len(items))
        with self.lock:
            if self.fail_first or (self.failing.is_set() and self.only in (None, task)):
                self.fail_first = max(0, self.fail_first - 1)
                raise ConnectionError("broker unavailable")
            self.batches.append((task, queue, list(items), time.monotonic()))
            self.kinds.append(by_type)

    def items(self, task: str | None = None) -> list[list[Any]]:
        with self.lock:
            return [item for t, _, items, _ in self.batches if task in (None, t) for item in items]


@pytest.fixture
def run_bridge(
    redis_url: str, channel_prefix: str
) -> Iterator[Callable[..., tuple[Bridge, Recorder]]]:
    """Start a bridge (``kind``, default the pub/sub one) on this test's channels, in a thread."""
    running: list[tuple[Bridge, threading.Thread]] = []

    def start(
        recorder: Recorder | None = None, kind: type[Bridge] = Bridge, **overrides: Any
    ) -> tuple[Bridge, Recorder]:
        settings = dataclasses.replace(
            Settings.from_env({}),
            redis_url=redis_url,
            event_channel_pattern=f"{channel_prefix}:*",
            **overrides,
        )
        recorder = recorder or Recorder()
        bridge = kind(settings, recorder)
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        running.append((bridge, thread))
        assert bridge.subscribed.wait(10), "bridge did not start reading"
        return bridge, recorder

    yield start
    for bridge, thread in running:
        bridge.stop()
        thread.join(30)
        assert not thread.is_alive(), "bridge thread did not stop"
