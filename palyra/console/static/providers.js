// Providers: health, circuit and time to recovery, last probe, models, last error;
// discover and test-connection buttons; per deployment (model@provider): load, use of its
// limits, time to first token, share of traffic, why it was skipped last. Refreshes itself
// every few seconds, in place (morph.js), so an open models list stays open.

import { plural } from "./format.js";
import { update } from "./morph.js";
import { every } from "./poll.js";

const REFRESH_MS = every(2000);

function badge(h, state) {
  return h("span", { class: `badge state-${state}` }, state.replace("_", " "));
}

function circuitText(circuit) {
  if (circuit.state === "open") {
    return `open, retry in ${(circuit.retry_after_ms / 1000).toFixed(1)} s`;
  }
  return circuit.state.replace("_", "-");
}

// Token counts run to millions: short forms keep the table narrow.
function count(n) {
  if (n < 10000) return String(n);
  if (n < 1000000) return `${Math.round(n / 1000)}k`;
  return `${(n / 1000000).toFixed(1).replace(/\.0$/, "")}M`;
}

function against(used, limit) {
  return limit ? `${count(used)} / ${count(limit)}` : count(used);
}

function seconds(s) {
  return s < 120 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;
}

function deploymentNotes(h, d, ago) {
  const notes = [];
  const upstream = d.upstream || {};
  const until = upstream.exhausted_until_ms;
  if (until && until > Date.now()) {
    const left = [["remaining_requests", "request"], ["remaining_tokens", "token"]]
      .filter(([field]) => upstream[field] !== null && upstream[field] !== undefined)
      .map(([field, what]) => `${plural(upstream[field], what)} left`);
    notes.push(h("div", { class: "error-text", "data-field": "exhausted" },
      `Upstream exhausted for ${seconds((until - Date.now()) / 1000)} more`
        + (left.length ? ` (${left.join(", ")})` : "")));
  }
  if (d.skipped) {
    notes.push(h("div", { "data-field": "skipped" }, d.skipped.reason,
      h("span", { class: "muted" }, ` — ${ago(d.skipped.at_ms)}`)));
  }
  return notes;
}

function deploymentRow(h, d, ago) {
  return h("tr", { key: `${d.model_id}@${d.provider_id}`, "data-deployment": `${d.model_id}@${d.provider_id}` },
    h("th", { scope: "row", class: "nowrap" }, d.model_id),
    h("td", { class: "nowrap" }, d.provider_id),
    h("td", { class: "nowrap", "data-field": "weight" }, `${d.weight} / ${d.priority}`),
    h("td", { class: "nowrap", "data-field": "strategy" }, d.strategy.replace("_", " ")),
    h("td", { class: "nowrap", "data-field": "in-flight" }, String(d.in_flight)),
    h("td", { class: "nowrap", "data-field": "requests" }, against(d.requests_last_minute, d.rpm_limit)),
    h("td", { class: "nowrap", "data-field": "tokens" }, against(d.tokens_last_minute, d.tpm_limit)),
    h("td", { class: "nowrap", "data-field": "ttft" }, d.ttft_ms === null || d.ttft_ms === undefined ? "—" : `${Math.round(d.ttft_ms)} ms`),
    h("td", { class: "nowrap", "data-field": "share" }, `${Math.round(d.share * 100)}%`),
    h("td", { "data-field": "last-skip" }, deploymentNotes(h, d, ago)),
  );
}

export function providersPage({ api, h, main, notify, ago, onLeave, dependencies }) {
  const table = h("tbody");
  const models = h("tbody");
  const deployments = h("tbody");
  // Hidden until the daemon reports deployments (an older one does not).
  const deploymentsSection = h("div", { id: "deployments", hidden: true },
    h("h2", {}, "Deployments"),
    h("p", { class: "muted" }, "Each model on each provider: load now, use of its limits over the last minute, share of the model's traffic, and why it was last passed over."),
    h("div", { class: "scroll" }, h("table", { id: "deployments-table" },
      h("caption", { class: "visually-hidden" }, "Deployments and their load"),
      h("thead", {}, h("tr", {}, ["Model", "Provider", "Weight / priority", "Strategy", "In flight", "Requests / min", "Tokens / min", "TTFT", "Share", "Last skipped"].map((t) => h("th", { scope: "col" }, t)))),
      deployments)));
  const updated = h("p", { class: "muted", id: "providers-updated" }, "Loading…");

  async function act(path, providerId, label) {
    try {
      const body = providerId ? { provider_id: providerId } : {};
      await api("POST", path, body);
      notify(`${label} done${providerId ? ` for ${providerId}` : ""}.`);
      await refresh();
    } catch (err) {
      notify(err.message, "error");
    }
  }

  function row(p) {
    const discovered = (p.discovery && p.discovery.model_ids) || [];
    const latency = p.health.last_probe_latency_ms;
    // The health record keeps its last error after a recovery; beside a green "ok" it would
    // read as a live problem.
    const error = p.enabled && p.health.state !== "ok" ? p.health.last_error || "" : "";
    return h("tr", { key: p.provider_id, "data-provider": p.provider_id },
      h("th", { scope: "row" }, p.provider_id, h("div", { class: "muted" }, p.kind)),
      h("td", { "data-field": "health" }, badge(h, p.enabled ? p.health.state : "disabled")),
      h("td", { "data-field": "circuit" }, circuitText(p.circuit)),
      h("td", {}, ago(p.health.last_probe_at_ms), latency === null ? "" : h("div", { class: "muted" }, `${Math.round(latency)} ms`)),
      h("td", { "data-field": "models" }, h("details", {},
        h("summary", {}, `${p.configured_models.length} configured, ${discovered.length} discovered`),
        h("p", {}, "Configured: ", p.configured_models.join(", ") || "none"),
        h("p", {}, "Discovered: ", discovered.join(", ") || "none"))),
      h("td", { class: "error-text", "data-field": "last-error" }, error),
      h("td", { "data-field": "actions" }, h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => act("/console/v1/models/discover", p.provider_id, "Discovery"),
          "aria-label": `Discover models of ${p.provider_id}` }, "Discover"),
        h("button", { type: "button", onclick: () => act("/console/v1/models/test-connection", p.provider_id, "Connection test"),
          "aria-label": `Test connection to ${p.provider_id}` }, "Test connection"))),
    );
  }

  async function refresh() {
    try {
      const status = await api("GET", "/console/v1/models/status");
      update(table, status.providers.map(row));
      update(models, status.models.map((m) => h("tr", { key: `${m.model_id}@${m.provider_id}` },
        h("th", { scope: "row" }, m.model_id),
        h("td", {}, m.provider_id),
        h("td", {}, m.role),
        h("td", {}, m.source),
        h("td", {}, m.available ? "yes" : "no"),
        h("td", {}, m.reason))));
      const rows = status.deployments || [];
      update(deployments, rows.map((d) => deploymentRow(h, d, ago)));
      deploymentsSection.hidden = rows.length === 0;
      // A dependency that does not answer is the banner's to say, over every page.
      dependencies(status.dependencies);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      updated.textContent = `Could not refresh: ${err.message}`;
    }
  }

  main.append(
    h("div", { class: "page-head" },
      h("h1", { id: "page-title" }, "Providers"),
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => act("/console/v1/models/discover", null, "Discovery") }, "Discover all"),
        h("button", { type: "button", onclick: () => act("/console/v1/models/test-connection", null, "Connection test") }, "Test all"))),
    updated,
    h("div", { class: "scroll" }, h("table", { id: "providers-table" },
      h("caption", { class: "visually-hidden" }, "Providers and their state"),
      h("thead", {}, h("tr", {}, ["Provider", "Health", "Circuit", "Last probe", "Models", "Last error", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      table)),
    h("h2", {}, "Models"),
    h("div", { class: "scroll" }, h("table", { id: "models-table" },
      h("caption", { class: "visually-hidden" }, "Models and their availability"),
      h("thead", {}, h("tr", {}, ["Model", "Provider", "Role", "Source", "Available", "Why"].map((t) => h("th", { scope: "col" }, t)))),
      models)),
    deploymentsSection,
  );
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  onLeave(() => clearInterval(timer));
}
