"""The split of a range into whole months and edge days covers each day of it exactly once."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from analytics.reports.sold import Split

FIRST, LAST = date(2023, 12, 1), date(2024, 4, 30)
ALL_DAYS = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]


def covered(split: Split) -> list[date]:
    """Each day of FIRST..LAST, once for every part of the split that reads it."""
    days = []
    for day in ALL_DAYS:
        month = day.replace(day=1)
        after_first = split.first_month is None or month >= split.first_month
        before_end = split.end_month is None or month < split.end_month
        if split.months and after_first and before_end:
            days.append(day)
        for low, high in split.edges:
            if (low is None or day >= low) and (high is None or day <= high):
                days.append(day)
    return days


BOUNDS = [None, date(2024, 1, 1), date(2024, 1, 31), date(2024, 1, 15), date(2024, 2, 29),
          date(2024, 2, 1), date(2024, 3, 30), date(2024, 3, 31), date(2024, 1, 2)]  # fmt: skip


@pytest.mark.parametrize("since", BOUNDS)
@pytest.mark.parametrize("until", BOUNDS)
def test_every_day_of_the_range_is_read_once_and_no_other(since, until):
    if since and until and since > until:
        return
    expected = [d for d in ALL_DAYS if (not since or d >= since) and (not until or d <= until)]
    split = Split.of(since, until)
    assert covered(split) == expected
    # Only days outside whole months are read per day: at most a month on either side.
    assert (
        all(
            low is not None and high is not None and (high - low).days < 62
            for low, high in split.edges
        )
        or not split.months
    )
