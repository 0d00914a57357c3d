"""The database schema's migrations: the Alembic configuration of this project and the upgrade.

Owned here (not by the command line) so that tests, benchmarks and the CLI share one way
to bring a database to the newest schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics.config import DEFAULT_RAW_PARTITIONS_AHEAD

#: The migrations: ``alembic/`` at the top of the source tree, reached through the package's
#: ``schema`` link so that a wheel (which copies them into the package) has them too.
SCRIPT_LOCATION = Path(__file__).resolve().parent / "schema"


def alembic_config(database_url: str) -> Any:
    """The Alembic configuration for ``database_url`` (alembic.ini's settings, set here, so
    that an installed package needs no file of the source tree)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False  # keep the CLI's own log format
    return config


def run_migrations(database_url: str, partitions_ahead: int = DEFAULT_RAW_PARTITIONS_AHEAD) -> str:
    """Upgrade the database to the newest schema; return the revision it is at.

    Then make sure the raw store's partitions for this month and ``partitions_ahead``
    more exist (PostgreSQL), so that a fresh database takes events at once.
    """
    from alembic.script import ScriptDirectory
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.db import make_engine
    from analytics.retention import ensure_partitions

    config = alembic_config(database_url)
    command.upgrade(config, "head")
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            ensure_partitions(session, datetime.now(UTC).replace(tzinfo=None), partitions_ahead)
    finally:
        engine.dispose()
    return str(ScriptDirectory.from_config(config).get_current_head())
