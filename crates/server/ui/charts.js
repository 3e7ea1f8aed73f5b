// Charts drawn as SVG: bars over time, each chart labelled for screen readers with what it
// shows and its total.

import { h, svg } from "./dom.js";

const W = 560;
const H = 140;
const PAD = 28;

/**
 * Bars for `buckets` ([{start: Date, value: number}]), `label` naming the figure; `format`
 * writes a value.
 */
export function bars(label, buckets, format = (v) => String(Math.round(v)), kind = "") {
  const max = Math.max(1, ...buckets.map((b) => b.value));
  const bw = (W - PAD) / Math.max(1, buckets.length);
  const total = buckets.reduce((s, b) => s + b.value, 0);
  const peak = buckets.reduce((m, b) => Math.max(m, b.value), 0);
  const summary = `${label}: peak ${format(peak)} per bucket`;
  const chart = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, class: `chart ${kind}` },
    svg("line", { x1: PAD, y1: H - 16, x2: W, y2: H - 16, class: "axis" }),
    svg("text", { x: 0, y: 12, class: "tick" }, format(max)),
    svg("text", { x: 0, y: H - 18, class: "tick" }, "0"),
    buckets.map((b, i) => {
      const bh = ((H - 36) * b.value) / max;
      return svg(
        "rect",
        { x: PAD + i * bw + 1, y: H - 16 - bh, width: Math.max(1, bw - 2), height: bh, class: "bar" },
        svg("title", {}, `${b.start.toLocaleString()}: ${format(b.value)}`),
      );
    }),
    buckets.length
      ? [
          svg("text", { x: PAD, y: H - 2, class: "tick" }, buckets[0].start.toLocaleString()),
          svg("text", { x: W, y: H - 2, class: "tick end" }, buckets[buckets.length - 1].start.toLocaleString()),
        ]
      : null,
  );
  return h("figure", { class: "chart-box" }, h("figcaption", {}, label, h("span", { class: "muted" }, ` · total ${format(total)}`)), chart);
}

/**
 * Sums stats rows (`GET /v1/stats`) into `count` buckets of `size` ms ending now, with
 * `pick(row)` the value of a row (for means, give `pick` a [sum, count] pair and `mean: true`).
 */
export function bucket(rows, size, count, pick, mean = false) {
  const end = Math.ceil(Date.now() / size) * size;
  const start = end - size * count;
  const sums = Array.from({ length: count }, () => [0, 0]);
  for (const r of rows) {
    const t = Date.parse(r.minute);
    if (t < start || t >= end) continue;
    const i = Math.floor((t - start) / size);
    const v = pick(r);
    if (mean) {
      sums[i][0] += v[0];
      sums[i][1] += v[1];
    } else sums[i][0] += v;
  }
  return sums.map(([s, n], i) => ({ start: new Date(start + i * size), value: mean ? (n ? s / n : 0) : s }));
}
