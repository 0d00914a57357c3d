"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The real app runs under uvicorn on a free port over the reports' oracle dataset. Each panel's
numbers, read from the tables and data attributes the page carries for a screen reader, must
equal what the API returns for the same range. A wrong or revoked key, an empty tenant and a
failing server each get their clear message; the page refreshes itself every 30 s. The
signed-in page is saved as test-artifacts/dashboard.png.

Without /usr/bin/chromium these tests skip, and fail under CI (like a missing database).
Playwright never downloads a browser here: never run `playwright install`.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import Engine

from analytics.config import Settings
from api.app import create_app
from tests.analytics.helpers import apply, make
from tests.conftest import IN_CI, wait_for

# Also slow: a browser and a server per test; the fast run (-m "not slow") leaves them out.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
#: The machine's network is closed: without these Chromium keeps dialling out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SINCE, UNTIL = "2024-03-04", "2024-03-13"
PAGE_NOW = datetime(2024, 3, 14, 9, 30, tzinfo=UTC)
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

#: Every table cell of a panel as {data-key: data-value}, one dict per body row.
READ_TABLE = """table => [...table.tBodies[0]?.rows ?? []].map(row => Object.fromEntries(
    [...row.cells].map(cell => [cell.dataset.key, cell.dataset.value])))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors other than a failed request (the refused-key and server-error tests
    # fail requests on purpose): a Content-Security-Policy violation, for one.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield page
    context.close()
    assert errors == [], f"errors on the page: {errors}"


@pytest.fixture
def server(pg: Engine, api_env: dict[str, str]) -> Iterator[str]:
    """The real app under uvicorn on a free port of 127.0.0.1; its base URL."""
    app = create_app(Settings.from_env(api_env))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: runner.started, timeout=15, what="uvicorn to start")
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner.should_exit = True
    thread.join(timeout=15)
    sock.close()
    app.state.engine.dispose()
    app.state.redis.close()


def api(server: str, key: str) -> Callable[..., Any]:
    def get(path: str, **params: Any) -> Any:
        reply = httpx.get(
            f"{server}/api/v1/{path}", params=params, headers={"Authorization": f"Bearer {key}"}
        )
        reply.raise_for_status()
        return reply.json()

    return get


def sign_in(page: Any, server: str, key: str, since: str = SINCE, until: str = UNTIL) -> None:
    page.goto(f"{server}/#since={since}&until={until}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Any) -> None:
    """Wait until the first load has finished."""
    page.wait_for_selector("#updated:not([hidden])", timeout=20_000)


def table(page: Any, selector: str) -> list[dict[str, str]]:
    return page.eval_on_selector(selector, READ_TABLE)


def screenshot(page: Any, name: str) -> None:
    """Save the whole page as test-artifacts/<name>.png (a test artifact) and say where."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")


def shown(value: Any) -> str:
    """A JSON value as the page's data-value carries it (JavaScript's String(value))."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_shown(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{key: shown(value) for key, value in row.items()} for row in rows]


def test_each_panel_shows_the_numbers_the_api_returns(oracle_loaded, server, new_key, page):
    key = new_key("tenant-1")
    get = api(server, key)
    # The page's clock starts the morning after the dataset's last day, so that the alerts'
    # ages read like a real morning's (and the saved screenshot is the same on every run).
    page.clock.install(time=PAGE_NOW)
    sign_in(page, server, key)
    signed_in(page)

    revenue = get("reports/revenue-by-day", since=SINCE, until=UNTIL)
    assert len(revenue) >= 15
    assert table(page, "#revenue-table") == as_shown(revenue)

    series = {
        name: get(f"reports/{name}", since=SINCE, until=UNTIL) for name in ("dau", "wau", "mau")
    }
    merged: dict[str, dict[str, str]] = defaultdict(dict)
    for name, rows in series.items():
        for row in rows:
            merged[row["date"]][name] = shown(row["active_users"])
    expected_users = [
        {"date": day, **{name: merged[day].get(name, "") for name in series}}
        for day in sorted(merged)
    ]
    assert len(expected_users) == 10
    assert table(page, "#users-table") == expected_users

    payments = get("reports/payments", since=SINCE, until=UNTIL)
    assert any(row["failed"] for row in payments)
    assert table(page, "#payments-table") == as_shown(payments)

    products = get("reports/top-products", since=SINCE, until=UNTIL, limit=5)
    assert len({row["currency"] for row in products}) >= 2
    assert table(page, "#products-table") == as_shown(products)

    alerts = get("alerts/open")
    assert alerts, "the dataset leaves alerts open"
    shown_alerts = table(page, "#alerts-table")
    assert [{k: v for k, v in row.items() if k != "age"} for row in shown_alerts] == as_shown(
        alerts
    )
    for row, alert in zip(shown_alerts, alerts, strict=True):
        raised = datetime.fromisoformat(alert["created_at"].replace("Z", "+00:00"))
        assert abs(int(row["age"]) - (PAGE_NOW - raised).total_seconds()) < 120
    ages = page.locator("#alerts-table tbody th").all_inner_texts()
    assert alerts[0]["created_at"] == "2024-03-13T20:00:00Z"
    assert ages[0] in ("13 h 30 min", "13 h 31 min")
    assert all(re.fullmatch(r"\d+ d \d+ h|\d+ h \d+ min|\d+ min", text) for text in ages), ages

    # The heatmap sums activity-heatmap of each day by weekday; its columns add up to the
    # activity-heatmap of the whole range (an independent check of the page's arithmetic).
    cells = page.eval_on_selector_all(
        "#heatmap-table td[data-hour]",
        "cells => cells.map(c => [c.dataset.weekday, +c.dataset.hour, +c.dataset.value])",
    )
    grid = {(weekday, hour): events for weekday, hour, events in cells}
    assert len(grid) == 7 * 24
    expected_grid: dict[tuple[str, int], int] = defaultdict(int)
    day = date.fromisoformat(SINCE)
    while day <= date.fromisoformat(UNTIL):
        for row in get("reports/activity-heatmap", since=str(day), until=str(day)):
            expected_grid[(WEEKDAYS[day.weekday()], row["hour"])] += row["events"]
        day += timedelta(days=1)
    assert {k: v for k, v in grid.items() if v} == dict(expected_grid)
    whole = {
        row["hour"]: row["events"]
        for row in get("reports/activity-heatmap", since=SINCE, until=UNTIL)
    }
    by_hour = {h: sum(grid[(w, h)] for w in WEEKDAYS) for h in range(24)}
    assert {h: n for h, n in by_hour.items() if n} == whole

    kpis = page.eval_on_selector_all(
        "#kpis dd", "dds => Object.fromEntries(dds.map(d => [d.dataset.kpi, d.dataset.value]))"
    )
    for currency in {row["currency"] for row in revenue}:
        total = sum(row["revenue"] for row in revenue if row["currency"] == currency)
        assert float(kpis[f"revenue-{currency}"]) == pytest.approx(total, abs=0.005)
    assert int(kpis["orders"]) == sum(row["orders"] for row in revenue)
    failed = sum(row["failed"] for row in payments)
    tried = sum(row["processed"] + row["failed"] for row in payments)
    assert float(kpis["failure-rate"]) == pytest.approx(failed / tried)
    assert int(kpis["open-alerts"]) == len(alerts)

    # What a screen reader needs: a heading per panel, a label per chart, a caption per table.
    headings = page.get_by_role("heading", level=2).all_inner_texts()
    for title in ("Revenue by day", "Active users", "Payment failure rate", "Top products",
                  "Open alerts", "Activity by hour and weekday"):  # fmt: skip
        assert title in headings
    labels = page.eval_on_selector_all(
        "canvas", "cs => cs.map(c => [c.getAttribute('role'), c.getAttribute('aria-label')])"
    )
    assert len(labels) == 4 and all(role == "img" and label for role, label in labels), labels
    captions = page.eval_on_selector_all("table", "ts => ts.map(t => t.caption?.textContent)")
    assert len(captions) == 6 and all(captions), captions
    assert page.locator("#updated").inner_text().startswith("Updated at ")
    screenshot(page, "dashboard")


@pytest.mark.parametrize("which", ["wrong", "revoked"])
def test_a_refused_key_is_said_clearly(pg, server, new_key, page, which):
    key = "ak_not-a-key" if which == "wrong" else new_key("tenant-1", revoked=True)
    sign_in(page, server, key)
    error = page.locator("#signin-error")
    expect(error).to_contain_text("This key was refused", timeout=20_000)
    assert error.get_attribute("role") == "alert"
    assert page.locator("#dashboard").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    screenshot(page, f"dashboard-{which}-key")


def test_an_empty_tenant_gets_an_empty_state(pg, server, new_key, page):
    sign_in(page, server, new_key("tenant-nobody"))
    signed_in(page)
    status = page.locator("#status")
    expect(status).to_contain_text(
        "No data for this key's tenant from 2024-03-04 to 2024-03-13", timeout=20_000
    )
    panels = page.eval_on_selector_all(".panel", "ps => ps.map(p => [p.id, p.dataset.empty])")
    assert panels and all(empty == "true" for _, empty in panels), panels
    assert page.locator("#panel-alerts .empty").inner_text() == "No open alerts."
    screenshot(page, "dashboard-empty")


def test_a_server_error_is_said_clearly_and_the_next_refresh_recovers(
    oracle_loaded, server, new_key, page
):
    page.clock.install()
    failing = {"on": True}

    def payments(route: Any) -> None:
        if failing["on"]:
            route.fulfill(status=500, content_type="application/json", body='{"detail":"boom"}')
        else:
            route.continue_()

    page.route("**/api/v1/reports/payments?*", payments)
    sign_in(page, server, new_key("tenant-1"))
    status = page.locator("#status")
    # The status line says "Loading…" first: wait for the failure's own words.
    failure = "The server could not answer (reports/payments answered HTTP 500: boom)"
    expect(status).to_contain_text(failure, timeout=20_000)
    text = status.inner_text()
    assert status.get_attribute("role") == "alert"
    assert "The dashboard tries again every 30 s." in text
    assert page.locator("#dashboard").is_hidden()  # no empty panels pretending to be numbers
    screenshot(page, "dashboard-server-error")
    failing["on"] = False
    page.clock.run_for(31_000)
    status.wait_for(state="hidden", timeout=20_000)
    signed_in(page)
    assert table(page, "#payments-table")
    # A failure after a good load keeps the numbers and says they are from the last update.
    failing["on"] = True
    page.clock.run_for(30_000)
    expect(status).to_contain_text("The numbers below are from the last update", timeout=20_000)
    assert page.locator("#dashboard").is_visible()


def test_it_refreshes_every_30_seconds_and_signs_out(oracle_loaded, server, new_key, page):
    page.clock.install()
    sign_in(page, server, new_key("tenant-1"))
    signed_in(page)
    orders = page.locator('#kpis dd[data-kpi="orders"]')
    before = int(orders.get_attribute("data-value") or "")
    first = page.locator("#updated").get_attribute("data-updated-at")
    apply(
        oracle_loaded,
        [
            make(
                "order.created",
                {"order_id": "late-order", "total_amount": 10, "currency": "USD"},
                "2024-03-10T12:00:00Z",
                "late-order-event",
                tenant_id="tenant-1",
            )
        ],
    )
    page.clock.run_for(29_000)
    assert int(orders.get_attribute("data-value") or "") == before  # not yet
    page.clock.run_for(2_000)
    wait_for(
        lambda: orders.get_attribute("data-value") == str(before + 1),
        timeout=20,
        what="the new order after a refresh",
    )
    assert page.locator("#updated").get_attribute("data-updated-at") != first

    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#signin").is_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    assert page.locator("#signin").is_visible()


def test_the_range_picker_defaults_to_the_last_30_days(pg, server, new_key, page):
    page.goto(server)
    page.get_by_label("API key").fill(new_key("tenant-1"))
    page.get_by_role("button", name="Sign in").click()
    signed_in(page)
    today = datetime.now(UTC).date()
    assert page.get_by_label("From").input_value() == str(today - timedelta(days=29))
    assert page.get_by_label("to", exact=True).input_value() == str(today)
    page.get_by_label("From").fill("2024-03-13")
    page.get_by_label("to", exact=True).fill("2024-03-04")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#status")).to_contain_text("is after the end day")

    heatmap = page.locator("#panel-heatmap .empty")
    for since, until, sentence in [
        ("2024-01-01", "2024-06-30", "Choose a range of at most 92 days to see the heatmap."),
        ("2024-01-01", "2024-01-31", "No events in this range."),
    ]:
        page.get_by_label("From").fill(since)
        page.get_by_label("to", exact=True).fill(until)
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#dashboard")).to_have_attribute("data-until", until)
        assert heatmap.inner_text() == sentence
    assert page.url.endswith("#since=2024-01-01&until=2024-01-31")

    # A range chosen while the last one is still loading is loaded next, not dropped.
    def slowly(route: Any) -> None:
        time.sleep(0.05)
        route.continue_()

    page.route("**/api/v1/reports/**", slowly)
    for until in ("2024-02-10", "2024-02-20"):
        page.get_by_label("to", exact=True).fill(until)
        page.get_by_role("button", name="Show").click()
    expect(page.locator("#dashboard")).to_have_attribute("data-until", "2024-02-20")
    assert page.get_by_label("to", exact=True).input_value() == "2024-02-20"
