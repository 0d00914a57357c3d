"""The database schema's migrations: the Alembic configuration of this project and the upgrade.

Owned here (not by the command line) so that tests, benchmarks and the CLI share one way
to bring a database to the newest schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
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
