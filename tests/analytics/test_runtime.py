"""The long-running processes exempt what they set up from the collector's full scans."""

from __future__ import annotations

import gc

import pytest

from analytics import runtime


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # this test process must not keep its objects out of collections


def test_freezing_exempts_what_is_alive_now_and_leaves_later_garbage_collectable(unfrozen):
    before = gc.get_freeze_count()
    frozen = runtime.freeze_startup_objects("test")
    assert frozen == gc.get_freeze_count() > before
    # Created after the freeze: a full collection still frees a cycle of them.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
    # Frozen objects are not scanned: fewer tracked objects than were frozen.
    assert len(gc.get_objects()) < frozen
