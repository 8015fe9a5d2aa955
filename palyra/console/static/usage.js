// Usage: requests, tokens and cost over the chosen period (an hour or a day at a time), and
// by model and by key, as charts (vendored uPlot) with the exact figures in tables below.

import { loadUPlot, timeChart, barChart } from "./charts.js";
import { count, plural, usd, table } from "./format.js";
import { update } from "./morph.js";
import { every } from "./poll.js";

// [since, label, group_by over time, bucket in seconds, caption's "a day"]
const PERIODS = {
  "24h": ["Last 24 hours", "hour", 3600, "an hour"],
  "7d": ["Last 7 days", "day", 86400, "a day"],
  "30d": ["Last 30 days", "day", 86400, "a day"],
};
const MEASURES = {
  requests: ["Requests", (r) => r.requests, count],
  tokens: ["Tokens", (r) => r.input_tokens + r.output_tokens, count],
  cost: ["Cost (USD)", (r) => r.cost_usd || 0, usd],
};
const BARS_SHOWN = 10;
const REFRESH_MS = every(30000);

function groupsOf(answer) {
  return (answer && answer.groups) || [];
}

// Requests made with the admin token (no client key) are the group "admin".
function keyLabel(row) {
  return row.key_name || row.key_id || row.group || "admin";
}

function modelLabel(row) {
  return String(row.group);
}

// A bucket as seconds since the epoch at its start: start_ms, else its label
// ("YYYY-MM-DD" or "YYYY-MM-DDTHH:00Z").
function bucketStart(row, size) {
  let at = row.start_ms;
  if (at === undefined || at === null) {
    const label = String(row.group);
    at = Date.parse(label.length <= 10 ? `${label}T00:00:00Z` : label.replace(/:00Z$/, ":00:00Z"));
  }
  return Math.floor(at / 1000 / size) * size;
}

// Every bucket of the period has a point, those without requests at zero.
function overTime(rows, size, sinceMs, nowMs) {
  const byStart = new Map();
  for (const row of rows) byStart.set(bucketStart(row, size), row);
  const starts = new Set(byStart.keys());
  const last = Math.floor(nowMs / 1000 / size) * size;
  for (let t = Math.floor(sinceMs / 1000 / size) * size; t <= last; t += size) starts.add(t);
  const xs = [...starts].sort((a, b) => a - b);
  const pick = (f) => xs.map((t) => (byStart.has(t) ? f(byStart.get(t)) || 0 : 0));
  return {
    xs,
    requests: pick((r) => r.requests),
    errors: pick((r) => r.errors),
    input: pick((r) => r.input_tokens),
    output: pick((r) => r.output_tokens),
    cached: pick((r) => r.cached_tokens),
    cost: pick((r) => r.cost_usd),
  };
}

function summaryText(label, t) {
  if (!t.requests) return `${label}: no requests.`;
  const cost = t.cost_usd === null || t.cost_usd === undefined ? "cost unknown" : `cost ${usd(t.cost_usd)}`;
  return `${label}: ${plural(t.requests, "request")} (${count(t.errors)} failed), `
    + `${plural(t.input_tokens, "token")} in, ${count(t.output_tokens)} out, ${cost}.`
    + (t.unpriced_requests ? ` ${plural(t.unpriced_requests, "request")} had no price and ${t.unpriced_requests === 1 ? "is" : "are"} not in the cost.` : "")
    + (t.estimated_requests ? ` ${count(t.estimated_requests)} ${t.estimated_requests === 1 ? "was" : "were"} costed from Palyra's own token count.` : "");
}

export function usagePage({ api, h, main, onLeave }) {
  let period = "7d";
  let measure = "requests";
  let last = null;
  let destroyers = [];
  let generation = 0;

  const periodSelect = h("select", { id: "usage-period", name: "since" },
    Object.entries(PERIODS).map(([value, [label]]) => h("option", { value, selected: value === period }, label)));
  const measureSelect = h("select", { id: "usage-measure", name: "measure" },
    Object.entries(MEASURES).map(([value, [label]]) => h("option", { value }, label)));
  const summary = h("p", { id: "usage-summary", "aria-live": "polite" }, "Loading…");
  const chartBox = (id) => h("figure", { class: "chart card", id },
    h("figcaption", {}), h("div", { class: "chart-plot", "data-chart": id }));
  const charts = {
    requests: chartBox("chart-requests"),
    tokens: chartBox("chart-tokens"),
    cost: chartBox("chart-cost"),
    model: chartBox("chart-model"),
    key: chartBox("chart-key"),
  };
  const modelTable = h("div", { id: "usage-by-model" });
  const keyTable = h("div", { id: "usage-by-key" });

  function plot(name) { return charts[name].querySelector(".chart-plot"); }
  function caption(name, text) { charts[name].querySelector("figcaption").textContent = text; }

  function clearCharts() {
    for (const destroy of destroyers) destroy();
    destroyers = [];
  }

  function groupTable(id, head, rows, label, sub) {
    if (!rows.length) return h("p", { class: "muted" }, "No requests in this period.");
    return table(h, id, `Usage by ${head.toLowerCase()}`,
      [head, "Requests", "Errors", "Tokens in", "Tokens out", "Cached", "Reasoning", "Cost"],
      rows.map((r) => h("tr", { key: String(r.group), "data-group": String(r.group) },
        h("th", { scope: "row" }, label(r), sub && sub(r) ? h("div", { class: "muted" }, sub(r)) : ""),
        h("td", { class: "nowrap", "data-field": "requests" }, count(r.requests)),
        h("td", { class: "nowrap", "data-field": "errors" }, count(r.errors)),
        h("td", { class: "nowrap", "data-field": "input" }, count(r.input_tokens)),
        h("td", { class: "nowrap", "data-field": "output" }, count(r.output_tokens)),
        h("td", { class: "nowrap", "data-field": "cached" }, count(r.cached_tokens)),
        h("td", { class: "nowrap", "data-field": "reasoning" }, count(r.reasoning_tokens)),
        h("td", { class: "nowrap", "data-field": "cost" }, usd(r.cost_usd),
          r.unpriced_requests ? h("div", { class: "muted" }, `${r.unpriced_requests} unpriced`) : ""))));
  }

  function draw(uPlot) {
    if (!last) return;
    clearCharts();
    const { time, models, keys, sinceMs, nowMs, period: shown } = last;
    const [, , size, each] = PERIODS[shown];
    const s = overTime(time, size, sinceMs, nowMs);
    caption("requests", `Requests and errors ${each}`);
    caption("tokens", `Tokens ${each}`);
    caption("cost", `Cost ${each} (USD)`);
    destroyers.push(
      timeChart(uPlot, plot("requests"), s.xs, size,
        [{ label: "Requests", values: s.requests }, { label: "Errors", values: s.errors }], count, true),
      timeChart(uPlot, plot("tokens"), s.xs, size,
        [{ label: "In", values: s.input }, { label: "Out", values: s.output }, { label: "Cached", values: s.cached }], count),
      timeChart(uPlot, plot("cost"), s.xs, size, [{ label: "Cost", values: s.cost }], usd, true));
    const [label, value, format] = MEASURES[measure];
    for (const [name, rows, naming] of [["model", models, modelLabel], ["key", keys, keyLabel]]) {
      const top = [...rows].sort((a, b) => value(b) - value(a)).slice(0, BARS_SHOWN);
      caption(name, `${label} by ${name}${rows.length > BARS_SHOWN ? ` (top ${BARS_SHOWN})` : ""}`);
      destroyers.push(barChart(uPlot, plot(name), top.map(naming), top.map(value), label, format, name === "model" ? "Model" : "Key"));
    }
  }

  // Without the chart library the figures are still there, in the tables.
  async function drawWhenLoaded() {
    try {
      draw(await loadUPlot());
    } catch (err) {
      for (const name of Object.keys(charts)) plot(name).replaceChildren(h("p", { class: "error-text" }, `No chart: ${err.message}.`));
    }
  }

  async function refresh() {
    const mine = ++generation;
    const chosen = period;
    const query = (by) => `/console/v1/usage?group_by=${by}&since=${encodeURIComponent(chosen)}`;
    try {
      const [time, models, keys] = await Promise.all([
        api("GET", query(PERIODS[chosen][1])),
        api("GET", query("model")),
        api("GET", query("key")),
      ]);
      if (mine !== generation) return;  // a later choice of period has overtaken this one
      last = { time: groupsOf(time), models: groupsOf(models), keys: groupsOf(keys),
        sinceMs: time.since_ms, nowMs: time.until_ms, period: chosen };
      summary.textContent = summaryText(PERIODS[chosen][0], time.total || {})
        + (models.truncated || keys.truncated ? " Only the busiest 1,000 groups are shown." : "");
      update(modelTable, groupTable("usage-model-table", "Model", last.models, modelLabel));
      update(keyTable, groupTable("usage-key-table", "Key", last.keys, keyLabel, (r) => r.key_id));
      drawWhenLoaded();
    } catch (err) {
      if (mine !== generation) return;
      summary.textContent = `Could not load usage: ${err.message}`;
    }
  }

  periodSelect.addEventListener("change", () => { period = periodSelect.value; refresh(); });
  measureSelect.addEventListener("change", () => { measure = measureSelect.value; drawWhenLoaded(); });

  main.append(
    h("div", { class: "page-head" },
      h("h1", { id: "page-title" }, "Usage"),
      h("div", { class: "filters" },
        h("div", {}, h("label", { for: "usage-period" }, "Period"), periodSelect),
        h("div", {}, h("label", { for: "usage-measure" }, "Bars show"), measureSelect))),
    summary,
    h("h2", {}, "Over time"),
    h("div", { class: "charts" }, charts.requests, charts.tokens, charts.cost),
    h("h2", {}, "By model"),
    charts.model, modelTable,
    h("h2", {}, "By key"),
    charts.key, keyTable);
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  onLeave(() => { clearInterval(timer); generation++; clearCharts(); });
}
