// The overview: throughput, failures and queue wait over the last hour, day or week (from the
// stored per-minute stats, so they survive restarts), live counts, workers and this node.

import { ApiError, get, query } from "../api.js";
import { bars, bucket } from "../charts.js";
import { fill, h, ms } from "../dom.js";

const RANGES = {
  hour: { span: 3600e3, size: 60e3, label: "Last hour (by minute)" },
  day: { span: 86400e3, size: 15 * 60e3, label: "Last day (by 15 minutes)" },
  week: { span: 7 * 86400e3, size: 3600e3, label: "Last week (by hour)" },
};

export async function render(main, ctx) {
  let range = ctx.params.get("range") || "hour";
  if (!RANGES[range]) range = "hour";
  const queue = ctx.params.get("queue") || "";
  const here = (r, q) => `#/?range=${r}${q ? `&queue=${encodeURIComponent(q)}` : ""}`;
  const counts = h("section", { "aria-labelledby": "now-h" });
  const charts = h("section", { "aria-labelledby": "charts-h" });
  const picker = h(
    "div",
    { class: "row", role: "group", "aria-label": "Time range" },
    Object.keys(RANGES).map((r) =>
      h("a", { href: here(r, queue), class: "pill", "aria-current": r === range ? "true" : null }, r),
    ),
  );
  const queuePick = h("select", { id: "overview-queue", onchange: (ev) => ctx.go(here(range, ev.target.value).slice(1)) });
  fill(
    main,
    h("h1", {}, "Overview"),
    counts,
    h("h2", { id: "charts-h" }, RANGES[range].label, queue ? ` in ${queue}` : ""),
    h("div", { class: "row" }, picker, h("label", { for: "overview-queue" }, "Queue"), queuePick),
    charts,
  );

  async function refresh() {
    const { span, size } = RANGES[range];
    const since = new Date(Date.now() - span).toISOString();
    const [queues, workers, ready, stats] = await Promise.all([
      get("/v1/queues"),
      get("/v1/workers"),
      get("/readyz").catch(() => null),
      // A server started with --no-event-log keeps no history: the counts still show.
      get(`/v1/stats${query({ since, limit: 100000, queue: queue || undefined })}`).catch((e) => {
        if (e instanceof ApiError && e.code === "event_log_off") return null;
        throw e;
      }),
    ]);
    fill(
      queuePick,
      h("option", { value: "", selected: !queue }, "all queues"),
      queues.queues.map((q) => h("option", { value: q.name, selected: q.name === queue }, q.name)),
    );
    const sum = (k) => queues.queues.reduce((s, q) => s + (q[k] || 0), 0);
    const live = workers.workers.filter((w) => w.status !== "lost");
    const oldest = Math.max(0, ...queues.queues.map((q) => q.oldest_ready_ms || 0));
    const tile = (label, value, href) =>
      h("div", { class: "tile" }, h("div", { class: "tile-label" }, label), h("div", { class: "tile-value" }, href ? h("a", { href }, value) : value));
    fill(
      counts,
      h("h2", { id: "now-h" }, "Now"),
      h(
        "div",
        { class: "tiles" },
        tile("Ready", sum("ready"), "#/tasks?q=state%3Aready"),
        tile("Scheduled", sum("scheduled"), "#/tasks?q=state%3Ascheduled"),
        tile("Running", sum("running"), "#/tasks?q=state%3Arunning"),
        tile("Dead letters", sum("failed"), "#/dead"),
        tile("Succeeded, last minute", sum("succeeded_last_minute")),
        tile("Oldest ready", oldest ? ms(oldest) : "none"),
        tile("Workers online", `${live.length} of ${workers.workers.length}`, "#/workers"),
        tile("This node", ready ? ready.node : "unknown"),
        tile("Leader", ready && ready.leader_node ? ready.leader_node : "not known yet"),
      ),
    );
    if (!stats) {
      fill(charts, h("p", {}, "This server keeps no event log (it was started with --no-event-log), so it has no history to draw."));
      return;
    }
    const rows = stats.rows;
    const count = Math.round(span / size);
    const names = queue ? [] : [...new Set(rows.map((r) => r.queue))].sort();
    const scope = queue ? `in ${queue}` : "all queues";
    const per = (label, pick, fmt, kind, mean) => bars(label, bucket(rows, size, count, pick, mean), fmt, kind);
    fill(
      charts,
      h(
        "div",
        { class: "charts" },
        per(`Succeeded, ${scope}`, (r) => r.succeeded),
        per(`Failed for good, ${scope}`, (r) => r.failed, undefined, "bad"),
        per(`Retried attempts, ${scope}`, (r) => r.retried, undefined, "warn"),
        per(`Mean queue wait, ${scope}`, (r) => [r.wait_us_sum / 1000, r.wait_count], ms, "wait", true),
        per(`Mean run time, ${scope}`, (r) => [r.run_us_sum / 1000, r.run_count], ms, "wait", true),
      ),
      names.length > 1
        ? [
            h("h2", {}, "By queue"),
            h(
              "div",
              { class: "charts" },
              names.map((q) => per(`Succeeded in ${q}`, (r) => (r.queue === q ? r.succeeded : 0))),
            ),
          ]
        : null,
    );
  }
  await refresh();
  return { refresh };
}
