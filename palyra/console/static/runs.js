// Runs: the run history of every source (CLI, cron, console), filtered by agent, source and
// status and paged back with "Older"; a form to start a run; and a run's own page
// (#/runs/<run id>) with its events, output, usage and error, followed live while it runs.
// A run started here runs in the background on the daemon, so a reload of its page (whose
// URL carries the run id) finds it again, still running or finished.

import { count, plural, when, table } from "./format.js";
import { update } from "./morph.js";
import { pagedList } from "./paging.js";
import { every } from "./poll.js";

const PAGE = 50;
const LIST_REFRESH_MS = every(3000);
const FOLLOW_MS = every(1000);
const SOURCES = [["", "Any source"], ["cli", "CLI (palyra run)"], ["cron", "Cron"], ["console", "Console / API"]];
const STATUSES = [["", "Any status"], ["running", "Running"], ["succeeded", "Succeeded"], ["failed", "Failed"], ["cancelled", "Cancelled"]];
const SOURCE_NAMES = { cli: "CLI", cron: "cron", console: "console" };

export function runHref(runId) { return `#/runs/${encodeURIComponent(runId)}`; }
// A cron job in the Cron jobs page, with its run history open (cron.js reads the id back).
export function cronHref(jobId) { return `#/cron/${encodeURIComponent(jobId)}`; }

function describe(event) {
  switch (event.type) {
    case "run_started": return `agent ${event.agent_id || "?"}, from ${SOURCE_NAMES[event.origin === "api" ? "console" : event.origin] || event.origin || "?"}`;
    case "model_text": return event.text || event.content || "";
    case "tool_call": return `${event.name}(${typeof event.arguments === "string" ? event.arguments : JSON.stringify(event.arguments)})`;
    case "tool_result": return event.result !== undefined ? String(event.result) : (event.content || event.error || "");
    case "run_finished": {
      const usage = event.usage ? `, ${plural(event.usage.total_tokens, "token")}` : "";
      return `${event.status}${event.error_kind ? ` (${event.error_kind})` : ""}${usage}`;
    }
    default: return JSON.stringify(event);
  }
}

function duration(run) {
  if (!run.finished_at_ms) return run.status === "running" ? "running" : "—";
  const s = (run.finished_at_ms - run.started_at_ms) / 1000;
  return s < 120 ? `${s.toFixed(1)} s` : `${Math.round(s / 60)} min`;
}

function usageText(run) {
  const u = run.usage || {};
  return `${plural(u.total_tokens, "token")}, ${plural(run.tool_calls, "tool call")}`;
}

function sourceCell(h, run) {
  return [SOURCE_NAMES[run.source] || run.source,
    run.cron_job_id ? h("div", { class: "muted id-wrap" }, h("a", { href: cronHref(run.cron_job_id) }, `job ${run.cron_job_id}`)) : ""];
}

export function runsPage(context) {
  if (context.path.length) runPage(context, context.path[0]);
  else listPage(context);
}

function listPage({ api, h, main, notify, onLeave }) {
  const agent = h("select", { id: "run-agent", name: "agent_id" });
  const input = h("textarea", { id: "run-input", name: "input", required: true });
  const startError = h("p", { class: "field-error", id: "run-error", role: "alert" });
  const agentFilter = h("select", { id: "filter-agent", name: "agent_id" }, h("option", { value: "" }, "Any agent"));
  const sourceFilter = h("select", { id: "filter-source", name: "source" }, SOURCES.map(([v, l]) => h("option", { value: v }, l)));
  const statusFilter = h("select", { id: "filter-status", name: "status" }, STATUSES.map(([v, l]) => h("option", { value: v }, l)));
  const body = h("tbody");
  const empty = h("p", { class: "muted", id: "runs-empty", hidden: true }, "No runs match.");
  const older = h("button", { type: "button", class: "secondary", id: "runs-older", hidden: true }, "Older");
  const state = h("p", { class: "muted", id: "runs-state" }, "Loading…");
  let applied = {};

  async function start(event) {
    event.preventDefault();
    startError.textContent = "";
    try {
      const run = await api("POST", "/console/v1/runs", { agent_id: agent.value, input: input.value, background: true });
      location.hash = runHref(run.run_id);
    } catch (err) {
      startError.textContent = err.message;
    }
  }

  function apply() {
    applied = { agent_id: agentFilter.value, source: sourceFilter.value, status: statusFilter.value };
    load();
  }

  function query(before) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(applied)) if (value) params.set(name, value);
    params.set("limit", String(PAGE));
    if (before) params.set("before", before);
    return `/console/v1/runs?${params}`;
  }

  function row(r) {
    return h("tr", { key: r.run_id, "data-run": r.run_id },
      h("td", { class: "nowrap", "data-field": "started" }, when(r.started_at_ms, true),
        h("div", { class: "muted", "data-field": "duration" }, duration(r))),
      // The whole id, never cut (issue 16): it is what `palyra runs show` and the API take.
      h("th", { scope: "row", "data-field": "run" }, h("a", { href: runHref(r.run_id), class: "run-id" }, r.run_id),
        h("div", { class: "muted" }, r.agent_id)),
      h("td", { "data-field": "source" }, sourceCell(h, r)),
      h("td", { class: "nowrap", "data-field": "status" }, h("span", { class: `badge state-${r.status}` }, r.status),
        r.error_kind ? h("div", { class: "muted" }, r.error_kind) : ""),
      h("td", { class: "excerpt", "data-field": "input" }, r.input_excerpt || ""),
      h("td", { class: "excerpt", "data-field": "output" },
        r.error_message ? h("div", { class: "error-text" }, r.error_message) : "",
        r.output_excerpt || (r.error_message ? "" : "—")),
      h("td", { class: "nowrap", "data-field": "usage" }, plural(r.usage.total_tokens, "token"),
        h("div", { class: "muted" }, plural(r.tool_calls, "tool call"))));
  }

  const load = pagedList({
    api, query, rowsOf: (answer) => (answer.runs || []).map(row),
    body, older, empty, state, what: "runs", refreshMs: LIST_REFRESH_MS, onLeave,
  });

  const filters = h("form", { class: "card filters", id: "runs-filters", role: "search", onsubmit: (event) => { event.preventDefault(); apply(); } },
    h("div", {}, h("label", { for: "filter-agent" }, "Agent"), agentFilter),
    h("div", {}, h("label", { for: "filter-source" }, "Source"), sourceFilter),
    h("div", {}, h("label", { for: "filter-status" }, "Status"), statusFilter),
    h("div", { class: "filters-go" }, h("button", { type: "submit" }, "Filter")));
  for (const select of [agentFilter, sourceFilter, statusFilter]) select.addEventListener("change", apply);

  main.append(
    h("h1", { id: "page-title" }, "Runs"),
    h("form", { class: "card", id: "run-form", onsubmit: start },
      h("h2", {}, "Start a run"),
      h("div", { class: "run-fields" },
        h("div", {}, h("label", { for: "run-agent" }, "Agent to run"), agent),
        h("div", {}, h("label", { for: "run-input" }, "Input"), input)),
      startError,
      h("button", { type: "submit" }, "Start run")),
    h("h2", {}, "History"),
    filters,
    state,
    table(h, "runs-list", "Agent runs, newest first",
      ["Started", "Run", "Source", "Status", "Input", "Output or error", "Usage"], body),
    empty,
    older);
  api("GET", "/console/v1/agents").then((data) => {
    const agents = data.agents || data;
    const label = (a) => (a.display_name ? `${a.display_name} (${a.agent_id})` : a.agent_id);
    agent.replaceChildren(...agents.map((a) => h("option", { value: a.agent_id, selected: a.agent_id === "default" }, label(a))));
    agentFilter.append(...agents.map((a) => h("option", { value: a.agent_id }, label(a))));
  }).catch((err) => notify(err.message, "error"));
  apply();
}

function runPage({ api, h, main, notify, onLeave }, runId) {
  const title = h("h1", { id: "page-title" }, `Run ${runId}`);
  const summary = h("dl", { class: "summary", id: "run-summary" });
  const errorBox = h("div", { class: "card error-box", id: "run-error-box", hidden: true });
  const inputBox = h("pre", { class: "text", id: "run-input-text" });
  const outputBox = h("pre", { class: "text", id: "run-output" });
  const events = h("ol", { class: "events", id: "run-events", "aria-live": "polite" });
  const status = h("p", { class: "muted", id: "run-status" }, "Loading…");
  const cancel = h("button", { type: "button", class: "danger", id: "run-cancel", hidden: true, onclick: async () => {
    try {
      await api("POST", `/console/v1/runs/${encodeURIComponent(runId)}/cancel`, {});
      notify("Cancelled.");
      await follow();
    } catch (err) {
      notify(err.message, "error");
    }
  } }, "Cancel run");
  let lastSeq = 0;
  let model = null;  // the model that answered, when the agent names none (the default model)
  let timer = null;
  let stopped = false;

  function show(answer) {
    // The run's row and its events are read one after the other: a run that finished in
    // between has its run_finished event but a row still running. The event says it all.
    const end = (answer.events || []).find((e) => e.type === "run_finished");
    const run = answer.status === "running" && end ? {
      ...answer, status: end.status, error_kind: end.error_kind ?? null, error_message: end.error_message ?? null,
      usage: end.usage || answer.usage, tool_calls: end.tool_calls ?? answer.tool_calls, turns: end.turns ?? answer.turns,
      output: end.output ?? null, finished_at_ms: end.at_ms,
    } : answer;
    for (const event of run.events || []) if (event.model) model = event.model;
    const item = (label, ...value) => [h("dt", {}, label), h("dd", { "data-field": label.toLowerCase() }, ...value)];
    update(summary,
      item("Agent", run.agent_id),
      item("Source", sourceCell(h, run)[0], run.cron_job_id ? [" · ", h("a", { href: cronHref(run.cron_job_id) }, `cron job ${run.cron_job_id}`)] : ""),
      item("Status", h("span", { class: `badge state-${run.status}` }, run.status), run.error_kind ? ` (${run.error_kind})` : ""),
      item("Model", run.model || model || "—"),
      item("Started", when(run.started_at_ms, true)),
      item("Finished", run.finished_at_ms ? `${when(run.finished_at_ms, true)} (${duration(run)})` : "—"),
      item("Usage", `${count(run.usage.prompt_tokens)} prompt + ${count(run.usage.completion_tokens)} completion = ${plural(run.usage.total_tokens, "token")}`),
      item("Steps", `${plural(run.turns, "turn")}, ${plural(run.tool_calls, "tool call")}`));
    errorBox.hidden = !run.error_message;
    update(errorBox, h("h2", {}, "Error"), h("p", { class: "error-text", id: "run-error-message" }, run.error_message || ""));
    inputBox.textContent = run.input;
    outputBox.textContent = run.output === null || run.output === undefined ? (run.status === "running" ? "(not yet)" : "(none)") : run.output;
    for (const event of run.events || []) {
      if (event.seq <= lastSeq) continue;
      lastSeq = event.seq;
      events.append(h("li", { "data-type": event.type, "data-seq": event.seq },
        h("span", { class: "kind" }, event.type.replace("_", " ")), describe(event)));
    }
    cancel.hidden = run.status !== "running";
    status.textContent = run.status === "running"
      ? "Running: new events show as they happen."
      : `Finished: ${run.status}${run.error_kind ? ` (${run.error_kind})` : ""}, ${usageText(run)}.`;
  }

  async function follow() {
    if (stopped) return;
    try {
      const run = await api("GET", `/console/v1/runs/${encodeURIComponent(runId)}?after_seq=${lastSeq}`);
      if (stopped) return;
      show(run);
      if (run.status === "running") timer = setTimeout(follow, FOLLOW_MS);
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) {
        title.textContent = "No such run";
        status.textContent = `${err.message}: it may have been purged after the retention period.`;
      } else {
        status.textContent = `Could not load the run: ${err.message}; retrying.`;
        timer = setTimeout(follow, FOLLOW_MS * 3);
      }
    }
  }

  main.append(
    h("p", {}, h("a", { href: "#/runs", id: "all-runs" }, "← All runs")),
    h("div", { class: "page-head" }, title, cancel),
    status,
    h("div", { class: "card" }, summary),
    errorBox,
    h("h2", {}, "Input"), inputBox,
    h("h2", {}, "Output"), outputBox,
    h("h2", {}, "Events"), events);
  follow();
  onLeave(() => { stopped = true; clearTimeout(timer); });
}
