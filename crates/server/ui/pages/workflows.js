// Workflows: the list, and one workflow with its nodes (a fan-out's children folded into one
// group with counts by state, so a 10,000-child fan-out stays one line) and the speedup report
// from the seed article's model: T_serial / T_parallel.

import { get, post, query } from "../api.js";
import { actionButton, ago, fill, h, jsonBlock, ms, notice, shortId, stateBadge, svg, table, taskLink } from "../dom.js";

const NODE_W = 180;
const NODE_H = 48;
const STATE_ORDER = ["succeeded", "running", "ready", "scheduled", "failed", "cancelled", "expired"];

/** The graph the server laid out (`GET /v1/workflows/{id}/graph`), drawn as SVG. */
export function drawGraph(g) {
  const pad = 12;
  const edges = g.edges.map((e) => {
    const a = g.nodes[e.from], b = g.nodes[e.to];
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    return svg("path", { d: `M${x1},${y1} C${x1 + 35},${y1} ${x2 - 35},${y2} ${x2},${y2}`, class: e.critical ? "edge critical" : "edge" });
  });
  const boxes = g.nodes.map((n) => {
    const states = STATE_ORDER.filter((s) => n.states[s]);
    let at = 0;
    const bar = states.map((s) => {
      const w = ((NODE_W - 2) * n.states[s]) / n.count;
      const r = svg("rect", { x: 1 + at, y: NODE_H - 8, width: Math.max(w, 1), height: 7, class: `fill-${s}` });
      at += w;
      return r;
    });
    const summary = n.count > 1 ? `× ${n.count}: ${states.map((s) => `${n.states[s]} ${s}`).join(", ")}` : states[0];
    const box = svg(
      "g",
      { transform: `translate(${n.x},${n.y})`, class: `gnode${n.critical ? " critical" : ""}${n.count > 1 ? " folded" : ""}` },
      svg("rect", { width: NODE_W, height: NODE_H, rx: 6, class: `box s-${states[0] || "scheduled"}` }),
      svg("text", { x: 8, y: 17, class: "glabel" }, n.label.length > 24 ? `${n.label.slice(0, 23)}…` : n.label),
      svg("text", { x: 8, y: 33, class: "gsub" }, summary.length > 30 ? `${summary.slice(0, 29)}…` : summary),
      bar,
      svg("title", {}, `${n.label} ${summary}${n.critical ? " (critical path)" : ""}`),
    );
    return n.task_id ? svg("a", { href: `#/tasks/${n.task_id}` }, box) : box;
  });
  const drawing = svg(
    "svg",
    { viewBox: `${-pad} ${-pad} ${g.width + 2 * pad} ${g.height + 2 * pad}`, width: g.width + 2 * pad, height: g.height + 2 * pad, class: "graph" },
    svg("defs", {}),
    edges,
    boxes,
  );
  const critical = g.nodes.filter((n) => n.critical).map((n) => n.label);
  return h(
    "figure",
    { class: "graph-box" },
    h("figcaption", {}, `${g.nodes.length} boxes, ${g.edges.length} edges`, critical.length ? `; critical path: ${critical.join(" → ")}` : ""),
    h("div", { class: "graph-scroll", tabindex: 0, role: "group", "aria-label": "Workflow graph" }, drawing),
  );
}

export async function renderList(main, ctx) {
  const state = ctx.params.get("state") || "";
  const name = ctx.params.get("name") || "";
  const status = h("div");
  const list = h("div");
  const select = h(
    "select",
    { id: "wf-state", name: "state" },
    ["", "running", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s, selected: s === state }, s || "any")),
  );
  const nameInput = h("input", { id: "wf-name", name: "name", value: name, autocomplete: "off" });
  const form = h(
    "form",
    { class: "row", role: "search" },
    h("label", { for: "wf-state" }, "State"),
    select,
    h("label", { for: "wf-name" }, "Name"),
    nameInput,
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (select.value) q.set("state", select.value);
    if (nameInput.value.trim()) q.set("name", nameInput.value.trim());
    ctx.go(`/workflows${q.toString() ? `?${q}` : ""}`);
  });
  fill(main, h("h1", {}, "Workflows"), form, status, list);
  let cursors = [null];

  async function refresh() {
    const cursor = cursors[cursors.length - 1];
    const page = await get(`/v1/workflows${query({ state, name, cursor: cursor || undefined, limit: 50 })}`);
    const rows = page.workflows.map((w) => [
      h("a", { href: `#/workflows/${w.id}`, class: "mono", title: w.id }, shortId(w.id)),
      w.name || "",
      stateBadge(w.state),
      `${w.succeeded} of ${w.total}`,
      w.failed,
      ago(w.created_at),
      w.finished_at ? ago(w.finished_at) : "",
      w.error || "",
    ]);
    fill(
      list,
      table("Workflows, newest first", ["Workflow", "Name", "State", "Succeeded", "Failed", "Created", "Finished", "Error"], rows, "No workflows."),
      h(
        "div",
        { class: "row pager" },
        cursors.length > 1 ? h("button", { type: "button", onclick: () => { cursors.pop(); refresh(); } }, "Newer") : null,
        page.next_cursor ? h("button", { type: "button", onclick: () => { cursors.push(page.next_cursor); refresh(); } }, "Older") : null,
      ),
    );
  }
  await refresh();
  return { refresh };
}

/** Folds nodes named `parent/index` (a fan-out's children) into one group per parent. */
export function fold(nodes) {
  const groups = [];
  const byKey = new Map();
  for (const n of nodes) {
    const m = /^(.*)\/(\d+)$/.exec(n.node);
    const key = m ? `${m[1]}/*` : n.node;
    let g = byKey.get(key);
    if (!g) {
      g = { key, fanOut: Boolean(m), nodes: [], states: {} };
      byKey.set(key, g);
      groups.push(g);
    }
    g.nodes.push(n);
    g.states[n.state] = (g.states[n.state] || 0) + 1;
  }
  return groups;
}

export async function render(main, ctx) {
  const id = ctx.match[1];
  const status = h("div");
  const body = h("div");
  fill(main, h("h1", {}, "Workflow ", h("span", { class: "mono" }, id)), status, body);

  async function refresh() {
    const [w, graph] = await Promise.all([get(`/v1/workflows/${id}`), get(`/v1/workflows/${id}/graph`)]);
    const groups = fold(w.nodes || []);
    const sp = w.speedup;
    const actions = ctx.me.operate
      ? h(
          "div",
          { class: "row" },
          w.state === "running"
            ? actionButton("Cancel workflow", async () => {
                await post(`/v1/workflows/${id}/cancel`);
                await refresh();
              }, status, { class: "danger" })
            : null,
          w.state === "failed" || w.state === "cancelled"
            ? actionButton("Retry workflow", async () => {
                await post(`/v1/workflows/${id}/retry`);
                notice(status, "Failed and cancelled tasks run again.");
                await refresh();
              }, status)
            : null,
        )
      : null;
    const counts = (states) =>
      h("span", { class: "counts" }, Object.entries(states).map(([s, n]) => h("span", { class: `badge s-${s}` }, `${n} ${s}`)));
    const rows = groups.map((g) =>
      g.fanOut
        ? [h("strong", {}, `${g.key} × ${g.nodes.length}`), counts(g.states), h("a", { href: `#/tasks?q=${encodeURIComponent(`id:${g.nodes[0].task_id}`)}` }, "first child")]
        : [g.key, stateBadge(g.nodes[0].state), taskLink(g.nodes[0].task_id)],
    );
    fill(
      body,
      h("div", { class: "row" }, stateBadge(w.state), w.name ? h("span", {}, w.name) : null, actions),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Tasks"), h("dd", {}, `${w.succeeded} succeeded, ${w.failed} failed, of ${w.total}`),
        h("dt", {}, "Created"), h("dd", {}, ago(w.created_at)),
        w.finished_at ? [h("dt", {}, "Finished"), h("dd", {}, ago(w.finished_at))] : null,
        w.error ? [h("dt", {}, "Error"), h("dd", {}, w.error)] : null,
      ),
      h("h2", {}, "Graph"),
      drawGraph(graph),
      h("h2", {}, "Speedup"),
      sp
        ? h(
            "dl",
            { class: "facts speedup" },
            h("dt", {}, "T_serial (sum of run times)"), h("dd", {}, ms(sp.t_serial_ms)),
            h("dt", {}, "T_parallel (first start to last finish)"), h("dd", {}, ms(sp.t_parallel_ms)),
            h("dt", {}, "Speedup"), h("dd", {}, `${sp.speedup.toFixed(2)}×`),
            h("dt", {}, "Peak parallelism"), h("dd", {}, sp.peak_parallelism),
            h("dt", {}, "Efficiency"), h("dd", {}, `${Math.round(sp.efficiency * 100)}%`),
            h("dt", {}, "Critical path"), h("dd", {}, ms(sp.critical_path_ms)),
            h("dt", {}, "Time spent queued"), h("dd", {}, ms(sp.queue_wait_ms)),
          )
        : h("p", { class: "muted" }, "Measured once tasks have run."),
      h("h2", {}, "Nodes"),
      table(`${w.total} nodes in ${groups.length} groups, parents first`, ["Node", "State", "Task"], rows),
      w.result !== undefined && w.result !== null ? [h("h2", {}, "Result"), jsonBlock(ctx.me.payloads ? w.result : undefined, "Result")] : null,
    );
  }
  await refresh();
  return { refresh };
}
