"""Fixtures of the fault suite: one simulated stream shared by every test, re-stamped per test."""

from __future__ import annotations

from typing import Any

import pytest

from analytics import bench
from tests.faults.helpers import COUNT, RATE


@pytest.fixture(scope="session")
def envelopes() -> list[dict[str, Any]]:
    """The realistic mix of all 15 event types for three tenants, simulated once per run."""
    return bench.simulate(COUNT, tenants=3, seed=5)


@pytest.fixture
def stream(envelopes: list[dict[str, Any]], channel_prefix: str) -> bench.Stream:
    """This test's copy of the stream: ids and tenants of its own, timestamps spread over
    the publishing window, channels under the test's prefix."""
    return bench.build_stream(envelopes, channel_prefix=channel_prefix, spread=COUNT / RATE)
