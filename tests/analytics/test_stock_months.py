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


def test_a_late_restock_moves_the_cycle_a_later_month_closes(engine):
    """A restock of February arriving after March's was counted: February now closes the
    January stock-out and March closes nothing, though only February's days are dirty."""
    from datetime import date

    from sqlalchemy.orm import Session

    from analytics.reports import Query, run
    from tests.analytics.helpers import apply, make

    place = {"product_id": "p1", "location_id": "L", "sku": "S1"}

    def stock(kind: str, stamp: str, event_id: str, **data):
        return make(f"inventory.{kind}", {**place, **data}, stamp, event_id)

    def hours() -> list:
        found = []
        for since, until in [(None, None), (date(2024, 1, 1), date(2024, 12, 31))]:
            with Session(engine) as session, session.begin():
                rows = run(session, "inventory", Query("tenant-a", since, until))
            found.append([(r["avg_restock_hours"], r["out_of_stock_events"]) for r in rows])
        return found

    apply(engine, [stock("out_of_stock", "2024-01-10T00:00:00Z", "out")])
    apply(engine, [stock("restocked", "2024-03-10T00:00:00Z", "march", new_quantity=5)])
    assert hours() == [[(1440.0, 1)]] * 2  # 60 days
    apply(engine, [stock("restocked", "2024-02-10T00:00:00Z", "feb", new_quantity=3)])
    assert hours() == [[(744.0, 1)]] * 2  # 31 days, and March's restock closes nothing
