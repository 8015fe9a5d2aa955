// Client keys: the list (limits, budget, expiry, state), create, revoke and rotate. A new
// secret is in the create or rotate answer only, so it is shown once, in a box the admin
// dismisses, and never kept by the page after that.

import { count, usd, when, until, table } from "./format.js";
import { update } from "./morph.js";
import { every } from "./poll.js";

const PERIODS = ["day", "week", "month", "total"];
const FIELDS = ["name", "models", "rpm", "tpm", "budget_usd", "budget_period", "expires_in", "agent_id"];

function state(key, now = Date.now()) {
  if (key.status) return key.status;
  if (key.revoked_at_ms) return "revoked";
  if (key.expires_at_ms && key.expires_at_ms <= now) return "expired";
  return "active";
}

function limitsText(key) {
  const parts = [];
  if (key.rpm) parts.push(`${count(key.rpm)} rpm`);
  if (key.tpm) parts.push(`${count(key.tpm)} tpm`);
  return parts.join(" · ") || "none";
}

function budgetText(key) {
  if (key.budget_usd === null || key.budget_usd === undefined) return "none";
  return key.budget_period === "total" ? `${usd(key.budget_usd)} in total` : `${usd(key.budget_usd)} / ${key.budget_period}`;
}

export function keysPage({ api, h, main, notify, confirmThen, onLeave }) {
  const list = h("div", { id: "keys" }, h("p", { class: "muted" }, "Loading…"));
  const formBox = h("div");
  const secretBox = h("div");

  async function refresh() {
    try {
      const data = await api("GET", "/console/v1/keys");
      update(list, render(data.keys || []));
    } catch (err) {
      notify(err.message, "error");
    }
  }

  // The secret lives in this box's text only; dismissing it drops the last reference.
  function showSecret(key, secret, rotated) {
    const code = h("code", { id: "new-secret", class: "secret-value" }, secret);
    const copied = h("span", { class: "muted", role: "status" });
    const copy = async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = "Copied.";
      } catch {
        // Without clipboard access (an http page not on loopback), select it for Ctrl+C.
        const range = document.createRange();
        range.selectNodeContents(code);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copied.textContent = "Selected: press Ctrl+C to copy.";
      }
    };
    const box = h("div", { class: "card secret", id: "secret-box", role: "region", "aria-labelledby": "secret-title" },
      h("h2", { id: "secret-title" }, rotated ? `New secret for ${key.name}` : `Key ${key.name} created`),
      h("p", {}, "Copy this secret now: it will not be shown again. Only its hash is stored."
        + (rotated ? " The previous secret no longer works." : "")),
      code,
      h("div", { class: "actions" },
        h("button", { type: "button", id: "copy-secret", onclick: copy }, "Copy"),
        h("button", { type: "button", class: "secondary", id: "dismiss-secret",
          onclick: () => secretBox.replaceChildren() }, "Dismiss"),
        copied));
    secretBox.replaceChildren(box);
    box.querySelector("#copy-secret").focus();
  }

  async function revoke(key) {
    try {
      await api("DELETE", `/console/v1/keys/${encodeURIComponent(key.key_id)}`);
      notify(`Revoked ${key.name}.`);
    } catch (err) {
      notify(err.message, "error");
    }
    await refresh();
  }

  async function rotate(key) {
    try {
      const answer = await api("POST", `/console/v1/keys/${encodeURIComponent(key.key_id)}/rotate`, {});
      showSecret(answer.key || key, answer.secret, true);
    } catch (err) {
      notify(err.message, "error");
    }
    await refresh();
  }

  function render(keys) {
    if (!keys.length) return h("p", { class: "muted" }, "No client keys yet: clients use the admin token.");
    return table(h, "keys-table", "Client keys",
      ["Key", "Prefix", "Models", "Limits", "Budget", "Expires", "Agent", "State", "Actions"],
      keys.map((key) => {
        const status = state(key);
        return h("tr", { key: key.key_id, "data-key": key.key_id },
          h("th", { scope: "row" }, key.name, h("div", { class: "muted" }, key.key_id),
            h("div", { class: "muted", "data-field": "created" }, `created ${when(key.created_at_ms)}`)),
          h("td", { class: "nowrap", "data-field": "prefix" }, h("code", {}, `${key.prefix}…`)),
          h("td", { "data-field": "models" }, key.models && key.models.length ? key.models.join(", ") : "all"),
          h("td", { "data-field": "limits" }, limitsText(key)),
          h("td", { "data-field": "budget" }, budgetText(key)),
          h("td", { "data-field": "expires" }, key.expires_at_ms ? when(key.expires_at_ms) : "never",
            key.expires_at_ms && status === "active" ? h("div", { class: "muted" }, until(key.expires_at_ms)) : ""),
          h("td", { "data-field": "agent" }, key.agent_id || "—"),
          h("td", { "data-field": "state" },
            h("span", { class: `badge state-${status === "active" ? "ok" : "failed"}` }, status),
            key.revoked_at_ms ? h("div", { class: "muted" }, when(key.revoked_at_ms)) : ""),
          h("td", {}, status === "revoked" ? "" : h("div", { class: "actions" },
            h("button", { type: "button", class: "secondary", "aria-label": `Rotate ${key.name}`,
              onclick: confirmThen(`Rotate ${key.name}? Its current secret stops working at once.`, () => rotate(key)) }, "Rotate"),
            h("button", { type: "button", class: "danger", "aria-label": `Revoke ${key.name}`,
              onclick: confirmThen(`Revoke ${key.name}? Clients using it are refused within a second.`, () => revoke(key)) }, "Revoke"))));
      }));
  }

  function showForm() {
    const field = (name, label, input, hint = "") => h("div", {},
      h("label", { for: `key-${name}` }, label), input,
      hint ? h("p", { class: "muted", id: `key-${name}-hint` }, hint) : "",
      h("p", { class: "field-error", id: `key-${name}-error`, "data-error-for": name, role: "alert" }));
    const number = (name, attrs = {}) => h("input", { id: `key-${name}`, name, type: "number", min: 0, inputmode: "numeric", ...attrs });
    const inputs = {
      name: h("input", { id: "key-name", name: "name", required: true, maxlength: 100, autocomplete: "off" }),
      models: h("input", { id: "key-models", name: "models", autocomplete: "off", "aria-describedby": "key-models-hint" }),
      rpm: number("rpm", { step: 1 }),
      tpm: number("tpm", { step: 1 }),
      budget_usd: number("budget_usd", { step: "0.01" }),
      budget_period: h("select", { id: "key-budget_period", name: "budget_period" },
        PERIODS.map((p) => h("option", { value: p, selected: p === "month" }, p))),
      expires_in: h("input", { id: "key-expires_in", name: "expires_in", autocomplete: "off", placeholder: "never", "aria-describedby": "key-expires_in-hint" }),
      agent_id: h("input", { id: "key-agent_id", name: "agent_id", autocomplete: "off", placeholder: "none" }),
    };
    const general = h("p", { class: "field-error", role: "alert" });
    const form = h("form", { class: "card", id: "key-form", onsubmit: async (event) => {
      event.preventDefault();
      for (const node of form.querySelectorAll("[data-error-for]")) node.textContent = "";
      general.textContent = "";
      const body = { name: inputs.name.value.trim() };
      const models = inputs.models.value.split(",").map((m) => m.trim()).filter(Boolean);
      if (models.length) body.models = models;
      for (const name of ["rpm", "tpm"]) if (inputs[name].value) body[name] = Number(inputs[name].value);
      if (inputs.budget_usd.value) {
        body.budget_usd = Number(inputs.budget_usd.value);
        body.budget_period = inputs.budget_period.value;
      }
      if (inputs.expires_in.value.trim()) body.expires_in = inputs.expires_in.value.trim();
      if (inputs.agent_id.value.trim()) body.agent_id = inputs.agent_id.value.trim();
      try {
        const answer = await api("POST", "/console/v1/keys", body);
        formBox.replaceChildren();
        showSecret(answer.key, answer.secret, false);
        await refresh();
      } catch (err) {
        // The daemon names the field it refused: show the message beside it.
        const top = (err.param || "").split(".")[0];
        const target = FIELDS.includes(top) ? form.querySelector(`[data-error-for="${top}"]`) : null;
        if (target) {
          target.textContent = err.message;
          inputs[top].focus();
        } else {
          general.textContent = err.message;
        }
      }
    } },
      h("h2", {}, "Create a key"),
      h("div", { class: "grid" },
        field("name", "Name", inputs.name),
        field("models", "Models", inputs.models, "Comma-separated model ids; empty: all models."),
        field("rpm", "Requests per minute", inputs.rpm),
        field("tpm", "Tokens per minute", inputs.tpm),
        field("budget_usd", "Budget (USD)", inputs.budget_usd),
        field("budget_period", "Budget period", inputs.budget_period),
        field("expires_in", "Expires after", inputs.expires_in, "A duration such as 30d or 12h; empty: never."),
        field("agent_id", "Agent", inputs.agent_id)),
      general,
      h("button", { type: "submit" }, "Create key"),
      h("button", { type: "button", class: "secondary", onclick: () => formBox.replaceChildren() }, "Cancel"));
    formBox.replaceChildren(form);
    inputs.name.focus();
  }

  main.append(
    h("div", { class: "page-head" },
      h("h1", { id: "page-title" }, "Keys"),
      h("button", { type: "button", id: "add-key", onclick: () => showForm() }, "Create key")),
    h("p", { class: "muted" }, "Client keys call the inference routes for their models, within their limits and budget; nothing else."),
    secretBox, formBox, list);
  refresh();
  const timer = setInterval(refresh, every(5000));
  onLeave(() => clearInterval(timer));
}
