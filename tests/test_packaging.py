"""The project as a wheel installs it: migrations travel inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics.migrations import SCRIPT_LOCATION

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_reaches_the_migrations_of_the_source_tree():
    assert (SCRIPT_LOCATION / "env.py").samefile(ROOT / "alembic" / "env.py")
    assert sorted(p.name for p in (SCRIPT_LOCATION / "versions").glob("*.py")) == sorted(
        p.name for p in (ROOT / "alembic" / "versions").glob("*.py")
    )


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_migrates_a_database(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("analytics_pipeline-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target), "DATABASE_URL": "sqlite:///analytics.db"}
    where = subprocess.run(
        [sys.executable, "-c", "import analytics.migrations as m; print(m.SCRIPT_LOCATION)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)
    result = subprocess.run(
        [sys.executable, "-m", "analytics", "migrate"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    head = sorted((ROOT / "alembic" / "versions").glob("*.py"))[-1].name.split("_")[0]
    assert result.stdout.strip() == f"database is at schema revision {head}"
    assert (elsewhere / "analytics.db").exists()
