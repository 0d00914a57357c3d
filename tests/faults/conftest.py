"""Fixtures of the fault suite: one simulated stream shared by every test, re-stamped per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen import publishing
from tests.conftest import IN_CI
from tests.faults.helpers import COUNT, RATE, ScratchPostgres, postgres_bindir


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
    bindir = postgres_bindir()
    if bindir is None:
        message = "initdb not found (PATH, /usr/lib/postgresql/*/bin): no throwaway PostgreSQL"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="analytics-fault-pg-"))
    cluster = ScratchPostgres(bindir, root)
    try:
        cluster.init()
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        cluster.stop("immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)
