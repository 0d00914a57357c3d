// The dashboard page: sign-in, the date range, loading every panel's reports, refreshing
// every 30 s, and saying clearly what went wrong (refused key, failing server, no data).

import { KeyRefused, forgetKey, getJSON, pooled, report, storeKey, storedKey } from "./api.js";
import * as panels from "./panels.js";

const REFRESH_MS = 30_000;
/** The heatmap asks activity-heatmap once per day of the range: at most this many days. */
const HEATMAP_MAX_DAYS = 92;
const DEFAULT_DAYS = 30;
const REFUSED =
  "This key was refused: it is unknown, mistyped or revoked. Sign in with a valid API key.";

const $ = (id) => document.getElementById(id);
let timer = null;
let loading = false;
let again = false;

// ------------------------------------------------------------------------ dates (UTC days)

const isDay = (text) => /^\d{4}-\d{2}-\d{2}$/.test(text || "") && !Number.isNaN(Date.parse(text));
const today = () => new Date().toISOString().slice(0, 10);

function addDays(day, count) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + count);
  return date.toISOString().slice(0, 10);
}

function daysOf(since, until) {
  const days = [];
  for (let day = since; day <= until; day = addDays(day, 1)) days.push(day);
  return days;
}

/** The range in the address (#since=…&until=…), else the last 30 days ending today. */
function initialRange() {
  const params = new URLSearchParams(location.hash.slice(1));
  const since = params.get("since");
  const until = params.get("until");
  if (isDay(since) && isDay(until)) return { since, until };
  const end = today();
  return { since: addDays(end, 1 - DEFAULT_DAYS), until: end };
}

function currentRange() {
  return { since: $("since").value, until: $("until").value };
}

// ------------------------------------------------------------------------ messages

function say(text, kind = "info") {
  const status = $("status");
  status.hidden = !text;
  status.textContent = text || "";
  status.className = `message ${kind}`;
  status.setAttribute("role", kind === "error" ? "alert" : "status");
}

function showSignIn(error) {
  clearInterval(timer);
  timer = null;
  for (const id of ["dashboard", "range", "updated", "signout"]) $(id).hidden = true;
  say("");
  $("signin").hidden = false;
  $("signin-error").hidden = !error;
  $("signin-error").textContent = error || "";
  $("api-key").value = "";
  $("api-key").focus();
}

function showDashboard() {
  $("signin").hidden = true;
  for (const id of ["range", "signout"]) $(id).hidden = false;
  say("Loading…"); // the panels appear with their first numbers
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
  refresh();
}

// ------------------------------------------------------------------------ loading

async function load(key, since, until) {
  const days = daysOf(since, until);
  const heatmapDays = days.length <= HEATMAP_MAX_DAYS ? days : [];
  const [revenueRows, dau, wau, mau, paymentRows, productRows, alertRows, perDay] =
    await Promise.all([
      report(key, "revenue-by-day", since, until),
      report(key, "dau", since, until),
      report(key, "wau", since, until),
      report(key, "mau", since, until),
      report(key, "payments", since, until),
      report(key, "top-products", since, until, { limit: 5 }),
      getJSON(key, "alerts/open"),
      pooled(heatmapDays, 6, async (day) => [day, await report(key, "activity-heatmap", day, day)]),
    ]);
  return {
    revenueRows, dau, wau, mau, paymentRows, productRows, alertRows, perDay,
    heatmapTooLong: heatmapDays.length < days.length,
  };
}

function render(data) {
  panels.kpis($("kpis"), data);
  panels.revenue($("panel-revenue"), data.revenueRows);
  panels.activeUsers($("panel-users"), data.dau, data.wau, data.mau);
  panels.payments($("panel-payments"), data.paymentRows);
  panels.topProducts($("panel-products"), data.productRows);
  panels.openAlerts($("panel-alerts"), data.alertRows);
  const tooLong = `Choose a range of at most ${HEATMAP_MAX_DAYS} days to see the heatmap.`;
  panels.heatmap($("panel-heatmap"), data.perDay, data.heatmapTooLong ? tooLong : null);
}

function isEmpty(data) {
  return (
    data.revenueRows.length + data.dau.length + data.paymentRows.length +
    data.productRows.length + data.alertRows.length === 0 &&
    data.perDay.every(([, rows]) => rows.length === 0)
  );
}

async function refresh() {
  const key = storedKey();
  if (!key) return showSignIn();
  const { since, until } = currentRange();
  if (!isDay(since) || !isDay(until)) return say("Choose a start and an end day.", "error");
  if (since > until) return say(`The start day ${since} is after the end day ${until}.`, "error");
  if (loading) {
    again = true; // a new range (or a tick) while loading: load once more when this one ends
    return;
  }
  loading = true;
  again = false;
  try {
    const data = await load(key, since, until);
    if (storedKey() !== key) return; // signed out (or in again) meanwhile
    render(data);
    $("dashboard").hidden = false;
    $("dashboard").dataset.since = since;
    $("dashboard").dataset.until = until;
    if (isEmpty(data)) {
      say(`No data for this key's tenant from ${since} to ${until}: no report has a row in this ` +
          "range. Choose another range, or check that events reach the pipeline.", "empty");
    } else {
      say("");
    }
    const now = new Date();
    const updated = $("updated");
    updated.hidden = false;
    updated.innerHTML = "";
    updated.append("Updated at ");
    const time = document.createElement("time");
    time.dateTime = now.toISOString();
    time.textContent = `${now.toISOString().slice(11, 19)} UTC`;
    updated.append(time);
    updated.dataset.updatedAt = now.toISOString();
  } catch (error) {
    if (error instanceof KeyRefused) {
      forgetKey();
      showSignIn(REFUSED);
    } else {
      const retry = `the dashboard tries again every ${REFRESH_MS / 1000} s.`;
      const next = $("dashboard").hidden
        ? retry[0].toUpperCase() + retry.slice(1)
        : `The numbers below are from the last update; ${retry}`;
      say(`The server could not answer (${error.message}). ${next}`, "error");
    }
  } finally {
    loading = false;
    if (again) refresh();
  }
}

// ------------------------------------------------------------------------ wiring

function start() {
  panels.buildChartPanels($("chart-panel"));
  const { since, until } = initialRange();
  $("since").value = since;
  $("until").value = until;
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    storeKey(key);
    showDashboard();
  });
  $("range").addEventListener("submit", (event) => {
    event.preventDefault();
    const range = currentRange();
    history.replaceState(null, "", `#since=${range.since}&until=${range.until}`);
    refresh();
  });
  $("signout").addEventListener("click", () => {
    forgetKey();
    showSignIn();
  });
  if (storedKey()) showDashboard();
  else showSignIn();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
