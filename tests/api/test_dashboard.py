"""The dashboard's files as the app serves them, and the open-alerts endpoint it reads.

What the page does with them is checked in a real browser: test_dashboard_browser.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import api
from tests.analytics.helpers import apply
from tests.analytics.test_open_alerts import inventory

STATIC = Path(api.__file__).parent / "static"
VENDORED = STATIC / "vendor" / "chart.js"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_dashboard_is_served_at_the_root_with_no_key(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Everything the page loads comes from this app: no CDN, so it works with no internet.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/static/") for source in sources), sources
    for source in sources:
        reply = client.get(source)
        assert reply.status_code == 200, source
        assert reply.content == (STATIC / source.removeprefix("/static/")).read_bytes()
    assert client.get("/static/dashboard.js").headers["content-type"].startswith("text/javascript")


def test_every_module_the_page_imports_is_served(client):
    for script in STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert client.get(f"/static/{imported}").status_code == 200, (script, imported)


def test_the_vendored_chart_js_is_the_one_its_note_names():
    note = (VENDORED / "VENDORED.md").read_text()
    digest = hashlib.sha256((VENDORED / "chart.umd.min.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in note
    version = re.search(r"`chart.js` (\d+\.\d+\.\d+)", note)
    assert version is not None
    assert (VENDORED / "chart.umd.min.js").read_text()[:200].count(f"v{version[1]}") == 1
    assert "MIT License" in (VENDORED / "LICENSE.md").read_text()


def test_open_alerts_need_a_key_and_are_the_keys_tenants(pg, client, new_key):
    assert client.get("/api/v1/alerts/open").status_code == 401
    assert client.get("/api/v1/alerts/open", headers=auth("ak_wrong")).status_code == 401
    apply(
        pg,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "low"),
            inventory("restocked", "2024-01-01T12:00:00Z", "re"),
            inventory("out_of_stock", "2024-01-02T08:00:00Z", "out"),
        ],
    )
    mine = client.get("/api/v1/alerts/open", headers=auth(new_key("tenant-a")))
    assert mine.status_code == 200
    rows = mine.json()
    assert [(r["created_at"], r["alert_type"], r["severity"]) for r in rows] == [
        ("2024-01-02T08:00:00Z", "out_of_stock", "critical")
    ]
    assert set(rows[0]) == {"created_at", "alert_type", "severity", "message"}
    other = client.get("/api/v1/alerts/open", headers=auth(new_key("tenant-b")))
    assert other.json() == []


@pytest.mark.slow
def test_a_wheel_carries_the_dashboard(tmp_path):
    # A non-editable install serves the page only if its files are package data.
    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    source = tmp_path / "src"
    for name in tracked:  # a copy, so that the build leaves nothing in the checkout
        if (root / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith("api/static/")}
    wanted = {
        f"api/static/{path.relative_to(STATIC)}" for path in STATIC.rglob("*") if path.is_file()
    }
    assert wanted and packed == wanted


def test_the_page_may_load_and_reach_only_this_app(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
