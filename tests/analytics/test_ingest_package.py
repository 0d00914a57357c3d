"""The ingest package's seams: pure handlers load no database module; every re-export resolves."""

from __future__ import annotations

import subprocess
import sys

import analytics.ingest

DATABASE_MODULES = ("sqlalchemy", "analytics.db", "analytics.models", "analytics.storable")


def test_handlers_and_changes_load_no_database_module() -> None:
    # A fresh interpreter: this one has long loaded the writer.
    code = (
        "import sys, analytics.ingest.handlers, analytics.ingest.changes\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'"
        f" or m in {DATABASE_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_reexported_name_resolves() -> None:
    assert set(analytics.ingest.__all__) == set(analytics.ingest._HOME)
    for name in analytics.ingest.__all__:
        assert getattr(analytics.ingest, name) is not None
