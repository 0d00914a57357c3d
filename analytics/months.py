"""Calendar months, the key of the monthly summaries (a month is its first day)."""

from __future__ import annotations

from datetime import date, timedelta


def month_of(day: date) -> date:
    """The first day of ``day``'s calendar month."""
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)
