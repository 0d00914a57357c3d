"""One Alembic chain takes empty PostgreSQL and SQLite databases to head, matching the models."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from analytics.models import Base
from analytics.retention import include_name


def head() -> str:
    from alembic.script import ScriptDirectory

    from analytics.migrations import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


def diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_postgresql_at_head_matches_the_models(postgres_url):
    assert diff(postgres_url) == []


def test_sqlite_at_head_matches_the_models(sqlite_url):
    assert diff(sqlite_url) == []


def test_every_model_table_exists_after_migrating(sqlite_url):
    engine = create_engine(sqlite_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_analytics_migrate_upgrades_an_empty_file_and_is_safe_to_rerun(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "analytics", "migrate"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert f"database is at schema revision {head()}" in done.stdout
    assert diff(url) == []


def test_analytics_migrate_reports_an_unreachable_database_in_one_line(tmp_path):
    env = {"DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "analytics", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: migration failed:")
