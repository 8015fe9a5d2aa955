// Auth profiles: list with provider, type, default mark, expiry and refresh state;
// connect an API key; sign in with OpenAI in a popup; refresh, set default, delete.

import { every } from "./poll.js";

const CALLBACK_MESSAGE = "palyra.oauth.callback";

function expiry(ms) {
  if (!ms) return "—";
  const minutes = Math.round((ms - Date.now()) / 60000);
  const when = new Date(ms).toLocaleString();
  return minutes >= 0 ? `${when} (in ${minutes} min)` : `${when} (expired)`;
}

export function authPage({ api, h, main, notify, confirmThen, onLeave }) {
  const list = h("tbody");
  const oauthStatus = h("p", { class: "muted", id: "oauth-status", role: "status" });
  // Progress in grey; a failure (no client id, a refused sign-in) in the error colour.
  function oauthSays(text, failed = false) {
    oauthStatus.className = failed ? "error-text" : "muted";
    oauthStatus.setAttribute("role", failed ? "alert" : "status");
    oauthStatus.textContent = text;
  }

  async function refresh() {
    try {
      const data = await api("GET", "/console/v1/auth/profiles");
      const profiles = data.profiles || data;
      list.replaceChildren(...profiles.map(row));
      if (!profiles.length) {
        list.append(h("tr", {}, h("td", { colspan: 7 }, "No profiles yet: connect a key or sign in below.")));
      }
    } catch (err) {
      notify(err.message, "error");
    }
  }

  async function act(label, method, path) {
    try {
      await api(method, path);
      notify(label);
      await refresh();
    } catch (err) {
      notify(err.message, "error");
    }
  }

  function row(p) {
    const id = encodeURIComponent(p.profile_id);
    const reauth = p.refresh_state === "reauth_required";
    return h("tr", { "data-profile": p.profile_id, class: reauth ? "reauth" : "" },
      h("th", { scope: "row" }, p.profile_id, h("div", { class: "muted" }, p.name || "")),
      h("td", {}, p.provider_kind),
      h("td", {}, p.credential_type === "oauth" ? "OAuth" : "API key"),
      h("td", {}, p.is_default ? h("span", { class: "badge state-ok" }, "default") : ""),
      h("td", {}, p.credential_type === "oauth" ? expiry(p.access_expires_at_ms) : "—"),
      h("td", {},
        h("span", { class: `badge state-${p.refresh_state}` }, reauth ? "re-authentication required" : p.refresh_state),
        p.last_error ? h("div", { class: "error-text" }, p.last_error) : ""),
      h("td", { class: "actions" },
        p.credential_type === "oauth"
          ? h("button", { type: "button", class: "secondary", "aria-label": `Refresh ${p.profile_id}`,
              onclick: () => act(`Refreshed ${p.profile_id}.`, "POST", `/console/v1/auth/profiles/${id}/refresh`) }, "Refresh")
          : "",
        p.is_default ? "" : h("button", { type: "button", class: "secondary", "aria-label": `Make ${p.profile_id} the default`,
          onclick: () => act(`${p.profile_id} is now the default.`, "POST", `/console/v1/auth/profiles/${id}/default`) }, "Set default"),
        h("button", { type: "button", class: "danger", "aria-label": `Delete ${p.profile_id}`,
          onclick: confirmThen(`Delete profile ${p.profile_id} and its secrets?`,
            () => act(`Deleted ${p.profile_id}.`, "DELETE", `/console/v1/auth/profiles/${id}`)) }, "Delete")),
    );
  }

  function apiKeyForm() {
    const provider = h("select", { id: "key-provider", name: "provider" },
      h("option", { value: "openai" }, "OpenAI"), h("option", { value: "anthropic" }, "Anthropic"));
    const profileId = h("input", { id: "key-profile-id", name: "profile_id", required: true, placeholder: "openai-main" });
    const profileName = h("input", { id: "key-profile-name", name: "profile_name" });
    const key = h("input", { id: "key-value", name: "api_key", type: "password", autocomplete: "off", required: true });
    const setDefault = h("input", { id: "key-default", type: "checkbox", checked: true });
    const error = h("p", { class: "field-error", id: "key-error", role: "alert" });
    const form = h("form", { class: "card", id: "api-key-form", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      const body = {
        api_key: key.value, profile_id: profileId.value, set_default: setDefault.checked,
      };
      if (profileName.value) body.profile_name = profileName.value;
      // The key leaves the page now, whatever the answer: it is never kept or shown again.
      key.value = "";
      try {
        await api("POST", `/console/v1/auth/providers/${provider.value}/api-key`, body);
        notify(`Connected ${profileId.value}.`);
        await refresh();
      } catch (err) {
        error.textContent = err.message;
      }
    } },
      h("h2", {}, "Connect an API key"),
      h("div", { class: "grid" },
        h("div", {}, h("label", { for: "key-provider" }, "Provider"), provider),
        h("div", {}, h("label", { for: "key-profile-id" }, "Profile id"), profileId),
        h("div", {}, h("label", { for: "key-profile-name" }, "Profile name (optional)"), profileName),
        h("div", {}, h("label", { for: "key-value" }, "API key"), key)),
      h("label", { class: "check", for: "key-default" }, setDefault, "Make it the default for this provider"),
      error,
      h("button", { type: "submit" }, "Check and save key"));
    return form;
  }

  function signInForm() {
    const profileId = h("input", { id: "oauth-profile-id", name: "profile_id", placeholder: "openai-oauth" });
    const clientId = h("input", { id: "oauth-client-id", name: "client_id", placeholder: "from config when empty" });
    let poll = null;

    async function finished(attemptId) {
      const state = await api("GET", `/console/v1/auth/providers/openai/callback-state?attempt_id=${encodeURIComponent(attemptId)}`);
      if (state.state === "pending") return false;
      clearInterval(poll);
      poll = null;
      if (state.state === "succeeded") oauthSays(`Signed in: profile ${state.profile_id || ""} saved.`);
      else oauthSays(`Sign-in failed: ${state.error || state.message || "unknown error"}`, true);
      await refresh();
      return true;
    }

    const button = h("button", { type: "button", id: "oauth-start", onclick: async () => {
      const body = {};
      if (profileId.value) body.profile_id = profileId.value;
      if (clientId.value) body.client_id = clientId.value;
      // Open the popup in the click itself, so popup blockers let it through.
      const popup = window.open("about:blank", "palyra-openai-sign-in", "width=520,height=680");
      try {
        const attempt = await api("POST", "/console/v1/auth/providers/openai/bootstrap", body);
        oauthSays("Waiting for the sign-in window…");
        if (popup) popup.location.href = attempt.authorization_url;
        else window.location.assign(attempt.authorization_url);
        const onMessage = async (event) => {
          // Only our own callback page, on our own origin, may say it is done.
          if (event.origin !== window.location.origin) return;
          if (!event.data || event.data.type !== CALLBACK_MESSAGE) return;
          window.removeEventListener("message", onMessage);
          await finished(attempt.attempt_id);
        };
        window.addEventListener("message", onMessage);
        poll = setInterval(() => finished(attempt.attempt_id).catch(() => {}), every(2000));
      } catch (err) {
        if (popup) popup.close();
        oauthSays(err.message, true);
      }
    } }, "Sign in with OpenAI");
    onLeave(() => { if (poll) clearInterval(poll); });
    return h("div", { class: "card" },
      h("h2", {}, "Sign in with OpenAI"),
      h("div", { class: "grid" },
        h("div", {}, h("label", { for: "oauth-profile-id" }, "Profile id (optional)"), profileId),
        h("div", {}, h("label", { for: "oauth-client-id" }, "Client id (optional)"), clientId)),
      button, oauthStatus);
  }

  main.append(
    h("h1", { id: "page-title" }, "Auth profiles"),
    h("div", { class: "scroll" }, h("table", { id: "profiles-table" },
      h("caption", { class: "visually-hidden" }, "Auth profiles"),
      h("thead", {}, h("tr", {}, ["Profile", "Provider", "Type", "Default", "Expires", "Refresh", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      list)),
    apiKeyForm(),
    signInForm(),
  );
  refresh();
}
