"""The database schema's migrations: the Alembic configuration of this project and the upgrade.

Owned here (not by the command line) so that tests, benchmarks and the CLI share one way
to bring a database to the newest schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def run_migrations(database_url: str) -> str:
    """Upgrade the database to the newest schema; return the revision it is at."""
    from alembic.script import ScriptDirectory

    from alembic import command

    config = alembic_config(database_url)
    command.upgrade(config, "head")
    return str(ScriptDirectory.from_config(config).get_current_head())
