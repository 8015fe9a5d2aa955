// How often a page asks the daemon again. Each page keeps its own interval, seconds apart, which
// is what people get. `?poll_ms=N` on the console's URL (/console/?poll_ms=200#/keys) shortens
// every one of them to N ms: the browser tests use it to see a refresh in a fraction of a second
// rather than wait seconds for it. It never lengthens an interval, and never goes under 50 ms.
const asked = Number(new URLSearchParams(location.search).get("poll_ms"));
const override = Number.isFinite(asked) && asked > 0 ? Math.max(50, asked) : null;

export function every(ms) {
  return override === null ? ms : Math.min(ms, override);
}
