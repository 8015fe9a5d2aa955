// Requests: the latest inference requests from the usage ledger, newest first, filtered by
// key, model and status, and paged back with "Older". The first page refreshes itself
// while no older page is shown.

import { count, plural, usd, ms, when, table } from "./format.js";
import { pagedList } from "./paging.js";
import { every } from "./poll.js";

const PAGE = 50;
const REFRESH_MS = every(5000);
const STATUSES = [["", "Any status"], ["ok", "Succeeded (below 400)"], ["error", "Failed (400 and above)"],
  ["429", "429 rate limited"], ["499", "499 cancelled by the client"], ["500", "500"], ["502", "502"], ["503", "503"], ["504", "504"]];

function statusClass(status) {
  if (status < 400) return "state-ok";
  if (status === 429 || status === 499) return "state-pending";
  return "state-failed";
}

function keyText(r) {
  if (r.key_name || r.key_id) return r.key_name || r.key_id;
  return r.agent_id ? `agent ${r.agent_id}` : "admin";
}

export function requestsPage({ api, h, main, notify, onLeave }) {
  const keySelect = h("select", { id: "filter-key", name: "key_id" },
    h("option", { value: "" }, "Any key"), h("option", { value: "admin" }, "Admin token"));
  const modelInput = h("input", { id: "filter-model", name: "model", list: "filter-model-list", autocomplete: "off", placeholder: "any model" });
  const modelList = h("datalist", { id: "filter-model-list" });
  const statusSelect = h("select", { id: "filter-status", name: "status" },
    STATUSES.map(([value, label]) => h("option", { value }, label)));
  const body = h("tbody");
  const empty = h("p", { class: "muted", id: "requests-empty", hidden: true }, "No requests match.");
  const older = h("button", { type: "button", class: "secondary", id: "requests-older", hidden: true }, "Older");
  const state = h("p", { class: "muted", id: "requests-state" }, "Loading…");
  const models = new Set();
  let applied = {};

  // The filters as last applied: a refresh or "Older" keeps to them while one is being typed.
  function apply() {
    applied = { key_id: keySelect.value, model: modelInput.value.trim(), status: statusSelect.value };
    load();
  }

  function query(before) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(applied)) if (value) params.set(name, value);
    params.set("limit", String(PAGE));
    if (before) params.set("before", before);
    return `/console/v1/requests?${params}`;
  }

  function row(r) {
    const tokens = `${count(r.input_tokens)} / ${count(r.output_tokens)}`;
    const extra = [r.cached_tokens ? `${count(r.cached_tokens)} cached` : "", r.reasoning_tokens ? `${count(r.reasoning_tokens)} reasoning` : ""].filter(Boolean).join(", ");
    const tries = [r.retries ? plural(r.retries, "retry", "retries") : "", r.failovers ? plural(r.failovers, "failover") : ""].filter(Boolean).join(", ");
    return h("tr", { key: r.request_id, "data-request": r.request_id },
      h("td", { "data-field": "time" }, when(r.at_ms, true)),
      h("td", { "data-field": "key" }, keyText(r)),
      h("td", { "data-field": "model" }, r.model, r.stream ? h("div", { class: "muted" }, "streamed") : ""),
      h("td", { "data-field": "provider" }, r.provider, r.deployment && r.deployment !== `${r.model}@${r.provider}` ? h("div", { class: "muted" }, r.deployment) : ""),
      h("td", { class: "nowrap", "data-field": "status" }, h("span", { class: `badge ${statusClass(r.status)}` }, String(r.status)),
        tries ? h("div", { class: "muted" }, tries) : ""),
      h("td", { class: "nowrap", "data-field": "latency" }, ms(r.latency_ms)),
      h("td", { class: "nowrap", "data-field": "ttft" }, ms(r.ttft_ms)),
      h("td", { class: "nowrap", "data-field": "tokens" }, tokens, extra ? h("div", { class: "muted" }, extra) : ""),
      h("td", { class: "nowrap", "data-field": "cost" }, usd(r.cost_usd), r.cost_estimated ? h("div", { class: "muted" }, "estimated") : ""),
      h("td", { class: "error-text wrap", "data-field": "error" }, r.error || ""));
  }

  function rowsOf(answer) {
    const rows = answer.requests || [];
    for (const r of rows) if (r.model && !models.has(r.model)) {
      models.add(r.model);
      modelList.append(h("option", { value: r.model }));
    }
    return rows.map(row);
  }

  const load = pagedList({ api, query, rowsOf, body, older, empty, state, what: "requests", refreshMs: REFRESH_MS, onLeave });

  async function loadKeys() {
    try {
      const data = await api("GET", "/console/v1/keys");
      keySelect.append(...(data.keys || []).map((k) => h("option", { value: k.key_id }, `${k.name} (${k.prefix}…)`)));
    } catch (err) {
      notify(`Key names could not be loaded: ${err.message}`, "error");
    }
  }

  const filters = h("form", { class: "card filters", id: "requests-filters", role: "search", onsubmit: (event) => { event.preventDefault(); apply(); } },
    h("div", {}, h("label", { for: "filter-key" }, "Key"), keySelect),
    h("div", {}, h("label", { for: "filter-model" }, "Model"), modelInput, modelList),
    h("div", {}, h("label", { for: "filter-status" }, "Status"), statusSelect),
    h("div", { class: "filters-go" }, h("button", { type: "submit" }, "Filter")));
  for (const input of [keySelect, statusSelect, modelInput]) input.addEventListener("change", apply);

  main.append(
    h("h1", { id: "page-title" }, "Requests"),
    filters,
    state,
    table(h, "requests-table", "Latest requests",
      ["Time", "Key", "Model", "Provider", "Status", "Latency", "TTFT", "Tokens in / out", "Cost", "Error"], body),
    empty,
    older);
  loadKeys();
  apply();
}
