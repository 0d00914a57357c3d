"""percentile: linear interpolation between closest ranks, exactly as Decimal arithmetic gives it."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from analytics.reports import percentile


def reference(values: list, fraction: float) -> Decimal | None:
    """The definition written out: every value made Decimal, then sorted."""
    if not values:
        return None
    ordered = sorted(Decimal(str(v)) for v in values)
    position = Decimal(str(fraction)) * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


amounts = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False),
)


@given(st.lists(amounts, max_size=60), st.sampled_from([0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_percentile_equals_the_definition(values, fraction):
    assert percentile(values, fraction) == reference(values, fraction)


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == Decimal("2.5")
    assert percentile([0.1, 0.2], 0.95) == Decimal("0.195")
    assert percentile([], 0.5) is None
