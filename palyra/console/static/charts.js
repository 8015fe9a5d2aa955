// Charts with the vendored uPlot (vendor/README.md): loaded on first use, so the pages
// without charts do not fetch it. Every label is drawn on the canvas or set as text.

const BASE = "/console/static/vendor/";
let loading = null;

export function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = `${BASE}uPlot.min.css`;
      document.head.append(css);
      const script = document.createElement("script");
      script.src = `${BASE}uPlot.iife.min.js`;
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => { loading = null; reject(new Error("the chart library did not load")); };
      document.head.append(script);
    });
  }
  return loading;
}

export const COLORS = ["#2456c7", "#b3261e", "#1d7a3a", "#9a6500", "#6b3fa0"];
const HEIGHT = 200;

function width(box) {
  return Math.max(200, Math.floor(box.clientWidth || 300));
}

// Draws into `box`, keeps the chart as wide as its box, and gives back a destroy function.
function mount(uPlot, box, opts, data) {
  box.replaceChildren();
  const chart = new uPlot({ ...opts, width: width(box), height: HEIGHT }, data, box);
  const observer = new ResizeObserver(() => {
    const w = width(box);
    if (w !== chart.width) chart.setSize({ width: w, height: HEIGHT });
  });
  observer.observe(box);
  return () => { observer.disconnect(); chart.destroy(); };
}

function axis(format) {
  return { stroke: "#5b6576", grid: { stroke: "#eceef2" }, ticks: { stroke: "#d9dde4" },
    size: 56, values: (u, splits) => splits.map(format) };
}

// One point a bucket (an hour or a day): x is seconds since the epoch at the bucket's start
// (UTC), each series its own values. bars: the series drawn as bars, else as lines.
export function timeChart(uPlot, box, xs, size, series, format, bars = false) {
  const barsPath = uPlot.paths.bars({ size: [0.6, 40] });
  return mount(uPlot, box, {
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    // Half a bucket on each side: the first and last bars are whole.
    scales: { x: { time: true, range: (u, min, max) => [min - size / 2, max + size / 2] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{ stroke: "#5b6576", grid: { show: false }, ticks: { stroke: "#d9dde4" } }, axis(format)],
    series: [{ label: size < 86400 ? "Hour" : "Day", value: size < 86400 ? "{YYYY}-{MM}-{DD} {HH}:00 UTC" : "{YYYY}-{MM}-{DD}" },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        fill: bars ? `${COLORS[i % COLORS.length]}cc` : undefined,
        width: bars ? 0 : 2,
        paths: bars ? barsPath : undefined,
        points: { show: !bars },
        value: (u, v) => (v === null || v === undefined ? "—" : format(v)),
      }))],
    legend: { live: true },
  }, [xs, ...series.map((s) => s.values)]);
}

// Bars by name (models, keys): x is the index, its axis shows the (shortened) names.
export function barChart(uPlot, box, names, values, label, format, what) {
  const short = names.map((n) => (n.length > 14 ? `${n.slice(0, 13)}…` : n));
  return mount(uPlot, box, {
    scales: { x: { time: false, range: () => [-0.5, names.length - 0.5] },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      { stroke: "#5b6576", grid: { show: false }, ticks: { show: false }, rotate: names.length > 4 ? 30 : 0,
        size: names.length > 4 ? 80 : 40, splits: () => names.map((_, i) => i),
        values: (u, splits) => splits.map((i) => short[i] ?? "") },
      axis(format),
    ],
    series: [{ label: what, value: (u, i) => names[i] ?? "" }, {
      label, stroke: COLORS[0], fill: `${COLORS[0]}cc`, width: 0,
      paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false },
      value: (u, v) => (v === null || v === undefined ? "—" : format(v)),
    }],
    cursor: { points: { show: false } },
    legend: { live: true },
  }, [names.map((_, i) => i), values]);
}
