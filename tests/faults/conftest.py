"""Fixtures of the fault suite: one simulated stream shared by every test, re-stamped per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loadgen import publishing
from tests.faults.helpers import COUNT, RATE, ScratchPostgres, running_postgres


@pytest.fixture(scope="session")
def envelopes() -> list[dict[str, Any]]:
    """The realistic mix of all 15 event types for three tenants, simulated once per run."""
    return publishing.simulate(COUNT, tenants=3, seed=5)


@pytest.fixture
def stream(envelopes: list[dict[str, Any]], channel_prefix: str) -> publishing.Stream:
    """This test's copy of the stream: ids and tenants of its own, timestamps spread over
    the publishing window, channels under the test's prefix."""
    return publishing.build_stream(envelopes, channel_prefix=channel_prefix, spread=COUNT / RATE)


@pytest.fixture
def scratch_postgres() -> Iterator[ScratchPostgres]:
    """A PostgreSQL cluster of the test's own with a migrated ``analytics`` database;
    stopped and deleted afterwards, whatever happened."""
    yield from running_postgres(ScratchPostgres)
