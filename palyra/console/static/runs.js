// Runs: start an agent run and watch its events live (model text, tool calls, results).

function describe(event) {
  switch (event.type) {
    case "run_started": return `run ${event.run_id || ""} started`;
    case "model_text": return event.text || event.content || "";
    case "tool_call": return `${event.name}(${typeof event.arguments === "string" ? event.arguments : JSON.stringify(event.arguments)})`;
    case "tool_result": return event.result !== undefined ? String(event.result) : (event.content || event.error || "");
    case "run_finished": {
      const usage = event.usage ? `, ${event.usage.total_tokens} tokens` : "";
      return `${event.status}${event.error_kind ? ` (${event.error_kind})` : ""}${usage}`;
    }
    default: return JSON.stringify(event);
  }
}

export function runsPage({ api, h, main, notify, onLeave }) {
  const agent = h("select", { id: "run-agent", name: "agent_id" });
  const input = h("textarea", { id: "run-input", name: "input", required: true });
  const events = h("ol", { class: "events", id: "run-events", "aria-live": "polite" });
  const status = h("p", { class: "muted", id: "run-status" });
  let controller = null;

  function show(event) {
    events.append(h("li", { "data-type": event.type },
      h("span", { class: "kind" }, event.type.replace("_", " ")), describe(event)));
    if (event.type === "run_finished") status.textContent = `Finished: ${describe(event)}`;
  }

  async function start(event) {
    event.preventDefault();
    events.replaceChildren();
    status.textContent = "Running…";
    controller = new AbortController();
    try {
      const csrf = (await api("GET", "/console/session")).csrf_token;
      const response = await fetch("/console/v1/runs", {
        method: "POST",
        credentials: "same-origin",
        signal: controller.signal,
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "text/event-stream" },
        body: JSON.stringify({ agent_id: agent.value, input: input.value, stream: true }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || `run refused (${response.status})`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data || data === "[DONE]") continue;
          const parsed = JSON.parse(data);
          if (parsed.error) throw new Error(parsed.error.message);
          show(parsed);
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") {
        status.textContent = `Failed: ${err.message}`;
        notify(err.message, "error");
      }
    } finally {
      controller = null;
    }
  }

  onLeave(() => { if (controller) controller.abort(); });
  main.append(
    h("h1", { id: "page-title" }, "Runs"),
    h("form", { class: "card", id: "run-form", onsubmit: start },
      h("label", { for: "run-agent" }, "Agent"), agent,
      h("label", { for: "run-input" }, "Input"), input,
      h("button", { type: "submit" }, "Start run")),
    status,
    events);
  api("GET", "/console/v1/agents").then((data) => {
    const agents = data.agents || data;
    agent.replaceChildren(...agents.map((a) => h("option", { value: a.agent_id }, a.display_name ? `${a.display_name} (${a.agent_id})` : a.agent_id)));
  }).catch((err) => notify(err.message, "error"));
}
