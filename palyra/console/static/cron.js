// Cron jobs: schedule, zone, next five fire times, enabled; add and edit with the daemon's
// validation messages beside the field; enable, disable, trigger, delete; run history with
// each run's output and a link to its agent run's page. Refreshed in place every few seconds.
// #/cron/<job id> (where a run's page links to the job that made it) marks that job's row and
// opens its run history.

import { update } from "./morph.js";
import { every } from "./poll.js";
import { plural, when } from "./format.js";
import { runHref } from "./runs.js";

const FIELDS = ["name", "agent_id", "prompt", "schedule", "timezone", "misfire", "concurrency", "retry"];

// The daemon names the field it refused (`schedule.cron`, `schedule.timezone`, `retry.max_attempts`).
function fieldOf(param) {
  if (param === "schedule.timezone") return "timezone";
  return (param || "").split(".")[0];
}

// "2026-11-27T09:00:00+01:00" as "2026-11-27 09:00 +01:00": the job's own zone, kept on one line.
function fireTime(iso) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::(\d{2}))?(.*)$/.exec(iso || "");
  if (!m) return iso;
  const seconds = m[3] && m[3] !== "00" ? `:${m[3]}` : "";
  const zone = m[4] === "+00:00" || m[4] === "Z" ? "UTC" : m[4];
  return `${m[1]} ${m[2]}${seconds} ${zone}`;
}

export function cronPage({ api, h, main, notify, ago, confirmThen, onLeave, path }) {
  const target = path[0] || null;
  let targetShown = false;
  const list = h("div", { id: "jobs" });
  const history = h("div", { id: "job-runs" });
  const formBox = h("div");
  let openHistory = null;

  async function refresh() {
    try {
      const data = await api("GET", "/console/v1/cron/jobs");
      const jobs = data.jobs || data;
      const detailed = await Promise.all(jobs.map((j) => api("GET", `/console/v1/cron/jobs/${encodeURIComponent(j.job_id)}`)));
      update(list, table(detailed));
      if (target && !targetShown) {
        targetShown = true;
        const job = detailed.find((j) => j.job_id === target);
        if (job) await openRuns(job);
        else notify(`No cron job ${target}: it may have been deleted.`, "error");
      } else if (openHistory) {
        await showRuns(openHistory);
      }
    } catch (err) {
      notify(err.message, "error");
    }
  }

  async function act(label, method, path, body) {
    try {
      await api(method, path, body);
      notify(label);
      await refresh();
    } catch (err) {
      notify(err.message, "error");
    }
  }

  function scheduleText(s) {
    if (s.description) return s.description;
    if (s.kind === "cron") return `cron "${s.cron}" (${s.timezone})`;
    if (s.kind === "every") return `every ${s.every}`;
    return `at ${s.at}`;
  }

  function table(jobs) {
    if (!jobs.length) return h("p", { class: "muted" }, "No jobs yet.");
    return h("div", { class: "scroll" }, h("table", { id: "jobs-table" },
      h("caption", { class: "visually-hidden" }, "Cron jobs"),
      h("thead", {}, h("tr", {}, ["Job", "Schedule", "Next fire times", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, jobs.map((job) => {
        const id = encodeURIComponent(job.job_id);
        return h("tr", { key: job.job_id, "data-job": job.job_id, "aria-current": job.job_id === target ? "true" : null },
          h("th", { scope: "row" }, job.name, h("div", { class: "muted" }, `${job.job_id} · agent ${job.agent_id}`)),
          h("td", { "data-field": "schedule" }, scheduleText(job.schedule),
            job.problem ? h("div", { class: "error-text" }, job.problem) : ""),
          h("td", { "data-field": "fire-times" }, h("ol", { class: "muted times" },
            (job.next_fire_times || []).map((t) => h("li", {}, h("time", { datetime: t }, fireTime(t)))))),
          h("td", {}, h("span", { class: `badge state-${job.state === "enabled" ? "ok" : "pending"}` }, job.state)),
          // The buttons sit in a box inside the cell: a cell that is itself a flex box is no
          // longer a table cell, and stops lining up with its row.
          h("td", { "data-field": "actions" }, h("div", { class: "actions" },
            h("button", { type: "button", class: "secondary", "aria-label": `Edit ${job.name}`, onclick: () => showForm(job) }, "Edit"),
            job.enabled
              ? h("button", { type: "button", class: "secondary", "aria-label": `Disable ${job.name}`,
                  onclick: () => act(`Disabled ${job.name}.`, "PATCH", `/console/v1/cron/jobs/${id}`, { enabled: false }) }, "Disable")
              : h("button", { type: "button", class: "secondary", "aria-label": `Enable ${job.name}`,
                  onclick: () => act(`Enabled ${job.name}.`, "PATCH", `/console/v1/cron/jobs/${id}`, { enabled: true }) }, "Enable"),
            h("button", { type: "button", "aria-label": `Run ${job.name} now`,
              onclick: () => act(`Triggered ${job.name}.`, "POST", `/console/v1/cron/jobs/${id}/trigger`) }, "Trigger"),
            h("button", { type: "button", class: "secondary", "aria-label": `Run history of ${job.name}`,
              onclick: () => openRuns(job) }, "History"),
            h("button", { type: "button", class: "danger", "aria-label": `Delete ${job.name}`,
              onclick: confirmThen(`Delete job ${job.name}?`, () => act(`Deleted ${job.name}.`, "DELETE", `/console/v1/cron/jobs/${id}`)) }, "Delete"))));
      }))));
  }

  // The history opens below the table: brought into view, its heading focused, so that it is
  // seen (and read out) however far down the table the button was.
  async function openRuns(job) {
    openHistory = job;
    try {
      await showRuns(job);
    } catch (err) {
      notify(err.message, "error");
      return;
    }
    const heading = history.querySelector("h2");
    history.scrollIntoView({ block: "start" });
    if (heading) heading.focus({ preventScroll: true });
  }

  function outputCell(r) {
    const link = r.agent_run_id ? h("a", { href: runHref(r.agent_run_id), "aria-label": `Run page of the ${r.trigger} run at ${when(r.scheduled_at_ms, true)}` }, "Events and output") : "";
    if (r.error_message) return [h("div", { class: "error-text" }, r.error_message), link];
    return [r.output_excerpt ? h("div", { class: "excerpt" }, r.output_excerpt) : h("span", { class: "muted" }, "—"), link ? h("div", {}, link) : ""];
  }

  async function showRuns(job) {
    const data = await api("GET", `/console/v1/cron/jobs/${encodeURIComponent(job.job_id)}/runs`);
    const runs = data.runs || data;
    update(history,
      h("h2", { tabindex: "-1", id: "job-runs-title" }, `Runs of ${job.name}`),
      runs.length ? h("div", { class: "scroll" }, h("table", { id: "runs-table" },
        h("caption", { class: "visually-hidden" }, `Runs of ${job.name}`),
        h("thead", {}, h("tr", {}, ["Scheduled", "Trigger", "Attempt", "Status", "Started", "Duration", "Usage", "Output or error"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, runs.map((r) => h("tr", { key: r.cron_run_id, "data-run": r.cron_run_id },
          h("td", { class: "nowrap" }, when(r.scheduled_at_ms, true)),
          h("td", {}, r.trigger),
          h("td", {}, String(r.attempt)),
          h("td", {}, h("span", { class: `badge state-${r.status}` }, r.status), r.reason ? h("div", { class: "muted" }, r.reason) : ""),
          h("td", {}, r.started_at_ms ? ago(r.started_at_ms) : "—"),
          h("td", {}, r.started_at_ms && r.finished_at_ms ? `${((r.finished_at_ms - r.started_at_ms) / 1000).toFixed(1)} s` : "—"),
          h("td", { "data-field": "usage" }, `${plural(r.usage.total_tokens, "token")}, ${plural(r.tool_calls, "tool call")}`),
          h("td", { "data-field": "output" }, outputCell(r)))))))
        : h("p", { class: "muted" }, "No runs yet."));
  }

  function showForm(job = null) {
    const s = job ? job.schedule : { kind: "cron", cron: "", timezone: "" };
    const field = (name, label, input, hint = "") => h("div", {},
      h("label", { for: `job-${name}` }, label), input,
      hint ? h("p", { class: "muted", id: `job-${name}-hint` }, hint) : "",
      h("p", { class: "field-error", id: `job-${name}-error`, "data-error-for": name, role: "alert" }));
    const inputs = {
      name: h("input", { id: "job-name", required: true, value: job ? job.name : "" }),
      agent_id: h("input", { id: "job-agent_id", required: true, value: job ? job.agent_id : "default" }),
      prompt: h("textarea", { id: "job-prompt", required: true }, job ? job.prompt : ""),
      kind: h("select", { id: "job-kind" }, ["cron", "every", "at"].map((k) => h("option", { value: k, selected: s.kind === k }, k))),
      schedule: h("input", { id: "job-schedule", required: true, value: s[s.kind] || "", "aria-describedby": "job-schedule-hint" }),
      timezone: h("input", { id: "job-timezone", value: s.timezone || "", placeholder: "default zone" }),
      misfire: h("select", { id: "job-misfire" }, ["catch_up", "skip"].map((k) => h("option", { value: k, selected: job && job.misfire === k }, k))),
      concurrency: h("select", { id: "job-concurrency" }, ["forbid", "queue_one", "replace"].map((k) => h("option", { value: k, selected: job && job.concurrency === k }, k))),
      max_attempts: h("input", { id: "job-max_attempts", type: "number", min: 1, max: 16, value: job ? job.retry.max_attempts : 1 }),
    };
    const general = h("p", { class: "field-error", role: "alert" });
    const form = h("form", { class: "card", id: "job-form", onsubmit: async (event) => {
      event.preventDefault();
      for (const node of form.querySelectorAll("[data-error-for]")) node.textContent = "";
      general.textContent = "";
      const schedule = { [inputs.kind.value]: inputs.schedule.value };
      if (inputs.kind.value === "cron" && inputs.timezone.value) schedule.timezone = inputs.timezone.value;
      const body = {
        name: inputs.name.value, agent_id: inputs.agent_id.value, prompt: inputs.prompt.value, schedule,
        misfire: inputs.misfire.value, concurrency: inputs.concurrency.value,
        retry: { max_attempts: Number(inputs.max_attempts.value) },
      };
      try {
        if (job) await api("PATCH", `/console/v1/cron/jobs/${encodeURIComponent(job.job_id)}`, body);
        else await api("POST", "/console/v1/cron/jobs", body);
        notify(job ? `Saved ${body.name}.` : `Added ${body.name}.`);
        formBox.replaceChildren();
        await refresh();
      } catch (err) {
        // Shown beside the field the daemon names.
        const top = fieldOf(err.param);
        const target = FIELDS.includes(top) ? form.querySelector(`[data-error-for="${top}"]`) : null;
        if (target) {
          target.textContent = err.message;
          const input = form.querySelector(top === "retry" ? "#job-max_attempts" : `#job-${top}`);
          if (input) input.focus();
        } else {
          general.textContent = err.message;
        }
      }
    } },
      h("h2", {}, job ? `Edit ${job.name}` : "Add a job"),
      h("div", { class: "grid" },
        field("name", "Name", inputs.name),
        field("agent_id", "Agent", inputs.agent_id),
        h("div", {}, h("label", { for: "job-kind" }, "Schedule kind"), inputs.kind),
        field("schedule", "Schedule", inputs.schedule, "cron: 5 fields (e.g. */5 * * * *); every: 30s, 5m, 1h; at: 2026-12-01T09:00:00+01:00"),
        field("timezone", "Time zone (cron only)", inputs.timezone),
        field("misfire", "Missed ticks", inputs.misfire),
        field("concurrency", "When still running", inputs.concurrency),
        field("retry", "Attempts (1-16)", inputs.max_attempts)),
      field("prompt", "Prompt", inputs.prompt),
      general,
      h("button", { type: "submit" }, job ? "Save" : "Add job"),
      h("button", { type: "button", class: "secondary", onclick: () => formBox.replaceChildren() }, "Cancel"));
    formBox.replaceChildren(form);
    inputs.name.focus();
  }

  main.append(
    h("div", { class: "page-head" },
      h("h1", { id: "page-title" }, "Cron jobs"),
      h("button", { type: "button", id: "add-job", onclick: () => showForm() }, "Add job")),
    formBox, list, history);
  refresh();
  const timer = setInterval(refresh, every(3000));
  onLeave(() => clearInterval(timer));
}
