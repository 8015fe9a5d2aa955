// The console shell: session, API calls, safe DOM building, the page router, and the banner
// that says when the state store or Redis does not answer.
// Pages live in their own modules and get a small context: { api, h, main, notify, onLeave,
// path, dependencies }; `path` is what follows the page's name in the URL (#/runs/<id>).

import { providersPage } from "./providers.js";
import { authPage } from "./auth.js";
import { cronPage } from "./cron.js";
import { runsPage } from "./runs.js";
import { keysPage } from "./keys.js";
import { usagePage } from "./usage.js";
import { requestsPage } from "./requests.js";
import { on } from "./morph.js";
import { every } from "./poll.js";

const pages = {
  providers: providersPage, auth: authPage, cron: cronPage, runs: runsPage,
  keys: keysPage, usage: usagePage, requests: requestsPage,
};
let csrfToken = null;
let leaveHandlers = [];
const DEPENDENCIES_MS = every(5000);
let dependenciesAt = 0;
let dependenciesTimer = null;

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed (${status})`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

// Every element is built with text nodes: nothing from the daemon is ever parsed as HTML.
// `key` names a row among its siblings for morph.js (polled pages update rows in place).
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "key") {
      node.__key = String(value);
    } else if (key.startsWith("on") && typeof value === "function") {
      on(node, key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      node.className = value;
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.status === 401 && path !== "/console/session") {
    showSignIn("Your session has ended; sign in again.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function notify(message, kind = "info") {
  const box = document.getElementById("notice");
  box.className = kind;
  box.textContent = message;
  if (message) setTimeout(() => { if (box.textContent === message) box.textContent = ""; }, 8000);
}

export function ago(ms) {
  if (!ms) return "never";
  const seconds = Math.max(0, (Date.now() - ms) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return new Date(ms).toLocaleString();
}

export function confirmThen(message, action) {
  return async () => { if (window.confirm(message)) await action(); };
}

function main() { return document.getElementById("main"); }

const DEPENDENCY_NAMES = { state_store: "The state store", redis: "Redis" };
// What each one's absence means (docs/deployment.md, "When PostgreSQL or Redis is unreachable").
const DEGRADED_MEANS = {
  state_store: "Requests are still served; what needs the store (cron runs, vault and profile "
    + "changes, run history) fails until it is back.",
  redis: "Requests are served on this daemon's own circuit breakers and health until it is back.",
};

// The banner over every page when a dependency does not answer. Pages that fetch the status
// anyway (Providers) hand it over; elsewhere the shell asks for it every few seconds.
export function dependencies(report) {
  dependenciesAt = Date.now();
  const banner = document.getElementById("degraded");
  const down = Object.entries(report || {}).filter(([, d]) => !d.ok);
  banner.hidden = down.length === 0;
  banner.replaceChildren(...(down.length ? [
    h("strong", {}, "Degraded: "),
    down.map(([name, d], i) => [i ? "; " : "",
      `${DEPENDENCY_NAMES[name] || name} does not answer${d.error ? ` (${d.error})` : ""}`]),
    ". ", down.map(([name]) => DEGRADED_MEANS[name] || "").filter(Boolean).join(" "),
  ] : []));
}

async function checkDependencies() {
  if (!csrfToken || Date.now() - dependenciesAt < DEPENDENCIES_MS * 0.9) return;
  try {
    dependencies((await api("GET", "/console/v1/models/status")).dependencies);
  } catch {
    // Signed out, or the daemon is away: the page itself says so.
  }
}

function leave() {
  for (const handler of leaveHandlers) handler();
  leaveHandlers = [];
}

function showSignIn(message = "") {
  leave();
  csrfToken = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("degraded").hidden = true;
  clearInterval(dependenciesTimer);
  dependenciesTimer = null;
  const error = h("p", { id: "sign-in-error", class: "field-error", role: "alert" }, message);
  const input = h("input", {
    id: "admin-token", name: "token", type: "password", autocomplete: "current-password",
    required: true, "aria-describedby": "sign-in-error",
  });
  const form = h("form", { class: "card narrow", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const session = await api("POST", "/console/session", { token: input.value });
      input.value = "";
      csrfToken = session.csrf_token;
      startConsole();
    } catch (err) {
      error.textContent = err.message;
      input.focus();
    }
  } },
    h("h1", {}, "Sign in"),
    h("p", {}, "Use the daemon's admin token (admin.token in its state directory)."),
    h("label", { for: "admin-token" }, "Admin token"),
    input,
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  main().replaceChildren(form);
  input.focus();
}

function route() {
  leave();
  const [first, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const name = first || "providers";
  const page = pages[name] || providersPage;
  const path = rest.filter(Boolean).map((part) => { try { return decodeURIComponent(part); } catch { return part; } });
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("section", { "aria-labelledby": "page-title" });
  main().replaceChildren(container);
  page({ api, h, main: container, notify, ago, confirmThen, path, dependencies,
    onLeave: (fn) => leaveHandlers.push(fn) });
}

function startConsole() {
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  route();
  checkDependencies();
  if (!dependenciesTimer) dependenciesTimer = setInterval(checkDependencies, DEPENDENCIES_MS);
}

async function boot() {
  window.addEventListener("hashchange", () => { if (csrfToken) route(); });
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/console/session"); } finally { showSignIn("Signed out."); }
  });
  const session = await api("GET", "/console/session");
  if (session.signed_in) {
    csrfToken = session.csrf_token;
    startConsole();
  } else {
    showSignIn();
  }
}

boot();
