"""Monthly stock summaries, carried across months, close the same restock cycles as one walk."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from analytics.months import month_of
from analytics.stock_months import Carried, carry, micros, summarise

KINDS = ["low_stock", "out_of_stock", "restocked", "adjusted"]


def walk(movements):
    """Every cycle (out_of_stock to the next restocked) of one history, walked in order."""
    opened, cycles, on_hand = None, [], None
    for kind, at, after in movements:
        on_hand = after if after is not None else on_hand
        if kind == "out_of_stock" and opened is None:
            opened = at
        elif kind == "restocked" and opened is not None:
            cycles.append(micros(at - opened))
            opened = None
    return cycles, on_hand


@pytest.mark.parametrize("seed", range(40))
def test_summaries_carried_over_months_give_the_cycles_and_level_of_a_whole_walk(seed):
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    moments = sorted(start + timedelta(minutes=rng.randrange(200 * 24 * 60)) for _ in range(60))
    history = [(rng.choice(KINDS), at, rng.choice([None, rng.randrange(50)])) for at in moments]
    by_month: dict = {}
    for movement in history:
        by_month.setdefault(month_of(movement[1].date()), []).append(movement)
    state, count, total, low = Carried(), 0, 0, 0
    for month in sorted(by_month):
        row = SimpleNamespace(**summarise(by_month[month]))
        closed = carry(state, row)
        if closed is not None:
            count, total = count + 1, total + closed
        count, total = count + row.cycles, total + row.cycle_micros
        low += row.low_stock
    cycles, on_hand = walk(history)
    assert (count, total) == (len(cycles), sum(cycles))
    assert state.on_hand == on_hand
    assert low == sum(kind == "low_stock" for kind, _, _ in history)
