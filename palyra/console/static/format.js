// Number, money and time forms shared by the Keys, Usage and Requests pages. Each returns
// plain text; the pages put it in text nodes.

// Token counts run to millions: short forms keep the tables narrow.
export function count(n) {
  if (n === null || n === undefined) return "—";
  if (Math.abs(n) < 10000) return String(n);
  if (Math.abs(n) < 1000000) return `${Math.round(n / 1000)}k`;
  return `${(n / 1000000).toFixed(1).replace(/\.0$/, "")}M`;
}

// "1 tool call", "2 tool calls", "12k tokens": the count in count()'s short form, and the noun
// that agrees with it (`many` where adding an s is wrong: "retries").
export function plural(n, one, many = `${one}s`) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

// Costs of single requests are fractions of a cent: keep their first significant digits.
export function usd(x) {
  if (x === null || x === undefined) return "—";
  if (x === 0) return "$0";
  if (Math.abs(x) >= 100) return `$${x.toFixed(0)}`;
  if (Math.abs(x) >= 0.01) return `$${x.toFixed(2)}`;
  return `$${x.toPrecision(2)}`;
}

export function ms(x) {
  if (x === null || x === undefined) return "—";
  return x < 10000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(1)} s`;
}

function pad(n) { return String(n).padStart(2, "0"); }

// Local time, to the minute (or the second), in one fixed form whatever the browser's locale.
export function when(msSinceEpoch, seconds = false) {
  if (msSinceEpoch === null || msSinceEpoch === undefined) return "—";
  const d = new Date(msSinceEpoch);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
  return `${day} ${time}`;
}

export function until(msSinceEpoch, now = Date.now()) {
  const left = (msSinceEpoch - now) / 1000;
  if (left <= 0) return "expired";
  if (left < 5400) return `in ${Math.max(1, Math.round(left / 60))} min`;
  if (left < 172800) return `in ${Math.round(left / 3600)} h`;
  return `in ${Math.round(left / 86400)} days`;
}

// One table in a box that scrolls sideways on its own: a caption for screen readers, column
// heads, and the rows built by the page (or a tbody it fills later).
export function table(h, id, caption, heads, rows) {
  return h("div", { class: "scroll" }, h("table", { id },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    rows instanceof HTMLTableSectionElement ? rows : h("tbody", {}, rows)));
}
