// The panels: each turns report rows into a chart (Chart.js) and a table that carries the
// same numbers. Every cell has data-key (the report's key) and data-value (the number or
// text exactly as the API returned it, "" for null), so a test or a screen reader reads
// the numbers, not the pixels.

const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"];
const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const charts = new Map();

// ------------------------------------------------------------------------ formatting

const plain = (value) => (value === null || value === undefined ? "–" : String(value));
const count = (value) => (value === null ? "–" : Number(value).toLocaleString("en-US"));
const money = (value) =>
  value === null
    ? "–"
    : Number(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percent = (value) =>
  value === null ? "–" : `${(100 * Number(value)).toFixed(value < 0.1 ? 2 : 1)} %`;

/** "3 d 4 h", "5 h 12 min", "7 min": how long ago ``iso`` was, from ``now``. */
export function age(iso, now = new Date()) {
  const minutes = Math.max(0, Math.floor((now - new Date(iso)) / 60000));
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes % 60} min`;
  return `${minutes} min`;
}

// ------------------------------------------------------------------------ building blocks

/**
 * Replace ``table``'s head and body with ``rows``; ``columns`` are
 * ``{key, label, format, numeric, header}`` (``header``: the cell is the row's heading).
 */
export function fillTable(table, columns, rows) {
  table.querySelectorAll("thead, tbody").forEach((part) => part.remove());
  const head = table.createTHead().insertRow();
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = column.label;
    if (column.numeric) th.className = "num";
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const column of columns) {
      const cell = document.createElement(column.header ? "th" : "td");
      if (column.header) cell.scope = "row";
      const value = column.value ? column.value(row) : row[column.key];
      cell.dataset.key = column.key;
      cell.dataset.value = value === null || value === undefined ? "" : String(value);
      cell.textContent = (column.format || plain)(value, row);
      if (column.numeric) cell.className = "num";
      if (column.className) cell.classList.add(column.className(value, row));
      tr.append(cell);
    }
  }
}

/** Give each chart panel (section[data-chart]) a copy of ``template``, filled in from its data. */
export function buildChartPanels(template) {
  for (const panel of document.querySelectorAll("section[data-chart]")) {
    const body = template.content.cloneNode(true);
    const name = panel.id.replace(/^panel-/, "");
    const canvas = body.querySelector("canvas");
    canvas.id = `${name}-chart`;
    canvas.setAttribute("aria-label", `${panel.dataset.chart}; the numbers are in the table below`);
    body.querySelector(".empty").textContent = panel.dataset.whenEmpty;
    body.querySelector("table").id = `${name}-table`;
    body.querySelector("caption").textContent = panel.dataset.caption;
    panel.append(body);
  }
}

/** Show a panel's chart and numbers, or its empty-state sentence. */
function showEmpty(panel, empty) {
  panel.querySelector(".empty").hidden = !empty;
  for (const part of panel.querySelectorAll(".chart, details, .scroll")) part.hidden = empty;
  panel.dataset.empty = String(empty);
}

function draw(canvas, config) {
  const Chart = window.Chart;
  const existing = charts.get(canvas.id);
  if (existing) {
    existing.data = config.data;
    existing.options = config.options;
    existing.update("none");
    return;
  }
  charts.set(canvas.id, new Chart(canvas, config));
}

function baseOptions(extra = {}) {
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    ...extra,
  };
}

/** A line chart of ``datasets`` (``{label, data}``) over ``labels``, coloured in order. */
function lineChart(canvas, labels, datasets, yTitle) {
  draw(canvas, {
    type: "line",
    data: {
      labels,
      datasets: datasets.map((dataset, index) => ({
        ...dataset,
        borderColor: PALETTE[index % PALETTE.length],
        backgroundColor: PALETTE[index % PALETTE.length],
        cubicInterpolationMode: "monotone",
        pointRadius: 2,
        spanGaps: true,
      })),
    },
    options: baseOptions({ scales: { y: { beginAtZero: true, title: { display: true, text: yTitle } } } }),
  });
}

function byDateAscending(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ------------------------------------------------------------------------ the panels

export function revenue(panel, rows) {
  showEmpty(panel, rows.length === 0);
  fillTable(panel.querySelector("table"), [
    { key: "date", label: "Day", header: true },
    { key: "currency", label: "Currency" },
    { key: "revenue", label: "Revenue", format: money, numeric: true },
    { key: "orders", label: "Orders", format: count, numeric: true },
    { key: "refunds", label: "Refunds", format: money, numeric: true },
    { key: "net_revenue", label: "Net revenue", format: money, numeric: true },
  ], rows);
  const totals = currencyTotals(rows);
  const currencies = [...totals.keys()];
  const days = [...new Set(rows.map((row) => row.date))].sort(byDateAscending);
  const datasets = currencies.map((currency) => {
    const byDay = new Map(rows.filter((r) => r.currency === currency).map((r) => [r.date, r.revenue]));
    return { label: currency, data: days.map((day) => byDay.get(day) ?? 0) };
  });
  lineChart(panel.querySelector("canvas"), days, datasets, "revenue");
}

/** Revenue and orders per currency over ``rows`` of revenue-by-day, biggest revenue first. */
export function currencyTotals(rows) {
  const totals = new Map();
  for (const row of rows) {
    const total = totals.get(row.currency) || { revenue: 0, orders: 0 };
    total.revenue += row.revenue;
    total.orders += row.orders;
    totals.set(row.currency, total);
  }
  return new Map([...totals].sort((a, b) => b[1].revenue - a[1].revenue));
}

export function activeUsers(panel, dau, wau, mau) {
  const series = { dau, wau, mau };
  const days = [...new Set([...dau, ...wau, ...mau].map((row) => row.date))].sort(byDateAscending);
  const lookup = Object.fromEntries(
    Object.entries(series).map(([name, rows]) => [name, new Map(rows.map((r) => [r.date, r.active_users]))]),
  );
  const merged = days.map((date) => ({
    date,
    dau: lookup.dau.get(date) ?? null,
    wau: lookup.wau.get(date) ?? null,
    mau: lookup.mau.get(date) ?? null,
  }));
  showEmpty(panel, merged.length === 0);
  fillTable(panel.querySelector("table"), [
    { key: "date", label: "Day", header: true },
    { key: "dau", label: "DAU", format: count, numeric: true },
    { key: "wau", label: "WAU", format: count, numeric: true },
    { key: "mau", label: "MAU", format: count, numeric: true },
  ], merged);
  const datasets = ["dau", "wau", "mau"].map((name) => ({
    label: name.toUpperCase(),
    data: merged.map((row) => row[name]),
  }));
  lineChart(panel.querySelector("canvas"), days, datasets, "users");
}

export function payments(panel, rows) {
  showEmpty(panel, rows.length === 0);
  fillTable(panel.querySelector("table"), [
    { key: "date", label: "Day", header: true },
    { key: "processed", label: "Processed", format: count, numeric: true },
    { key: "failed", label: "Failed", format: count, numeric: true },
    { key: "refunded", label: "Refunded", format: count, numeric: true },
    { key: "failure_rate", label: "Failure rate", format: percent, numeric: true },
  ], rows);
  draw(panel.querySelector("canvas"), {
    type: "bar",
    data: {
      labels: rows.map((row) => row.date),
      datasets: [{
        label: "failure rate (%)",
        data: rows.map((row) => 100 * row.failure_rate),
        backgroundColor: "#dc2626",
      }],
    },
    options: baseOptions({
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, title: { display: true, text: "% of payments failed" } } },
    }),
  });
}

/** Overall failure rate of ``rows`` of the payments report: failed / (processed + failed). */
export function failureRate(rows) {
  const failed = rows.reduce((sum, row) => sum + row.failed, 0);
  const tried = rows.reduce((sum, row) => sum + row.processed + row.failed, 0);
  return tried ? failed / tried : null;
}

export function topProducts(panel, rows) {
  showEmpty(panel, rows.length === 0);
  fillTable(panel.querySelector("table"), [
    { key: "product_id", label: "Product id" },
    { key: "name", label: "Name", header: true },
    { key: "currency", label: "Currency" },
    { key: "units_sold", label: "Units sold", format: count, numeric: true },
    { key: "revenue", label: "Revenue", format: money, numeric: true },
  ], rows);
  const currencies = [...new Set(rows.map((row) => row.currency))];
  draw(panel.querySelector("canvas"), {
    type: "bar",
    data: {
      labels: rows.map((row) => `${row.name ?? row.product_id} (${row.currency})`),
      datasets: currencies.map((currency, index) => ({
        label: currency,
        data: rows.map((row) => (row.currency === currency ? row.revenue : null)),
        backgroundColor: PALETTE[index % PALETTE.length],
        grouped: false, // one bar per product: each row is of one currency only
      })),
    },
    options: baseOptions({
      indexAxis: "y",
      interaction: { mode: "nearest", intersect: true },
      scales: {
        x: { beginAtZero: true, title: { display: true, text: "revenue" } },
        y: { ticks: { autoSkip: false } },
      },
    }),
  });
}

export function openAlerts(panel, rows, now = new Date()) {
  showEmpty(panel, rows.length === 0);
  fillTable(panel.querySelector("table"), [
    {
      key: "age",
      label: "Open for",
      header: true,
      value: (row) => Math.max(0, Math.floor((now - new Date(row.created_at)) / 1000)),
      format: (_, row) => age(row.created_at, now),
    },
    { key: "alert_type", label: "Type", format: (value) => value.replaceAll("_", " ") },
    { key: "severity", label: "Severity", className: (value) => `severity-${value}` },
    { key: "created_at", label: "Raised at (UTC)", format: (value) => value.replace("T", " ").replace("Z", "") },
    { key: "message", label: "Message" },
  ], rows);
}

/**
 * ``perDay``: [[YYYY-MM-DD, rows of activity-heatmap for that day], ...]; ``why``: a sentence
 * saying why there are no days (instead of the panel's empty-state sentence), if there is one.
 */
export function heatmap(panel, perDay, why = null) {
  const grid = WEEKDAYS.map(() => new Array(24).fill(0));
  for (const [day, rows] of perDay) {
    const weekday = (new Date(`${day}T00:00:00Z`).getUTCDay() + 6) % 7; // Monday first
    for (const row of rows) grid[weekday][row.hour] += row.events;
  }
  const peak = Math.max(0, ...grid.flat());
  showEmpty(panel, peak === 0);
  panel.querySelector(".empty").textContent = why || panel.dataset.whenEmpty;
  const table = panel.querySelector("table");
  table.querySelectorAll("thead, tbody").forEach((part) => part.remove());
  const head = table.createTHead().insertRow();
  head.append(document.createElement("td"));
  for (let hour = 0; hour < 24; hour++) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = String(hour).padStart(2, "0");
    th.title = `${hour}:00–${hour}:59 UTC`;
    head.append(th);
  }
  const body = table.createTBody();
  WEEKDAYS.forEach((name, weekday) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name.slice(0, 3);
    th.title = name;
    tr.append(th);
    grid[weekday].forEach((events, hour) => {
      const td = tr.insertCell();
      td.dataset.weekday = name;
      td.dataset.hour = String(hour);
      td.dataset.value = String(events);
      td.textContent = events ? String(events) : "";
      td.setAttribute("aria-label", `${name} ${hour}:00 UTC: ${events} events`);
      const strength = peak ? events / peak : 0;
      td.style.backgroundColor = events ? `rgba(37, 99, 235, ${0.08 + 0.92 * strength})` : "";
      if (strength > 0.55) td.classList.add("strong");
    });
  });
}

/** The headline figures: revenue per currency, orders, failure rate, open alerts. */
export function kpis(list, { revenueRows, paymentRows, alertRows }) {
  const items = [];
  for (const [currency, total] of currencyTotals(revenueRows)) {
    items.push([`Revenue ${currency}`, money(total.revenue), `revenue-${currency}`, total.revenue]);
  }
  const orders = revenueRows.reduce((sum, row) => sum + row.orders, 0);
  items.push(["Orders", count(orders), "orders", orders]);
  const rate = failureRate(paymentRows);
  items.push(["Payment failure rate", percent(rate), "failure-rate", rate]);
  items.push(["Open alerts", count(alertRows.length), "open-alerts", alertRows.length]);
  list.replaceChildren();
  for (const [label, text, name, value] of items) {
    const wrapper = document.createElement("div");
    wrapper.className = "kpi";
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = text;
    dd.dataset.kpi = name;
    dd.dataset.value = value === null ? "" : String(value);
    wrapper.append(dt, dd);
    list.append(wrapper);
  }
}
