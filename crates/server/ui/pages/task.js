// One task: its payload, result and error, every attempt, progress, its log, why it cannot be
// scheduled, its workflow; retry or cancel it.

import { get, post, query } from "../api.js";
import { actionButton, ago, fill, h, jsonBlock, ms, notice, shortId, stateBadge, table } from "../dom.js";

const RETRYABLE = ["failed", "cancelled", "expired"];
const CANCELLABLE = ["scheduled", "ready", "running"];

/** A workflow task's parents and children (from its workflow's nodes), at most 50 of each shown. */
async function relatives(t) {
  try {
    const w = await get(`/v1/workflows/${t.workflow_id}`);
    const at = w.nodes.findIndex((n) => n.task_id === t.id);
    if (at < 0) return null;
    const parents = (w.nodes[at].parents || []).map((i) => w.nodes[i]);
    const children = w.nodes.filter((n) => (n.parents || []).includes(at));
    return { parents, children };
  } catch {
    return null;
  }
}

function links(nodes) {
  if (!nodes.length) return null;
  const shown = nodes.slice(0, 50).map((n, i) => [i ? ", " : "", h("a", { href: `#/tasks/${n.task_id}` }, n.node)]);
  return [shown, nodes.length > 50 ? ` and ${nodes.length - 50} more` : ""];
}

export async function render(main, ctx) {
  const id = ctx.match[1];
  const status = h("div");
  const body = h("div");
  fill(main, h("h1", {}, "Task ", h("span", { class: "mono" }, id)), status, body);

  async function refresh() {
    const [t, logs] = await Promise.all([
      get(`/v1/tasks/${id}`),
      get(`/v1/tasks/${id}/logs${query({ limit: 1000 })}`).catch(() => ({ lines: [] })),
    ]);
    const family = t.workflow_id ? await relatives(t) : null;
    const row = (k, v) => (v === undefined || v === null || v === "" ? null : [h("dt", {}, k), h("dd", {}, v)]);
    const lease = t.lease;
    const actions = ctx.me.operate
      ? h(
          "div",
          { class: "row" },
          RETRYABLE.includes(t.state)
            ? actionButton("Retry", async () => {
                await post(`/v1/tasks/${id}/retry`);
                notice(status, "Sent back to its queue with a fresh attempt budget.");
                await refresh();
              }, status)
            : null,
          CANCELLABLE.includes(t.state) && !t.cancel_requested
            ? actionButton("Cancel", async () => {
                await post(`/v1/tasks/${id}/cancel`);
                notice(status, t.state === "running" ? "Its worker is asked to stop." : "Cancelled.");
                await refresh();
              }, status, { class: "danger" })
            : null,
        )
      : null;
    const attempts = (t.history || []).map((a) => [
      a.number,
      h("span", { class: "mono", title: a.worker_id }, a.worker_id),
      ago(a.started_at),
      ms(Date.parse(a.finished_at) - Date.parse(a.started_at)),
      h("span", { class: `badge o-${a.outcome}` }, a.outcome),
      a.error || "",
    ]);
    if (lease) {
      attempts.push([lease.attempt, h("span", { class: "mono", title: lease.worker_id }, lease.worker_id), ago(lease.started_at), "running", h("span", { class: "badge s-running" }, "running"), ""]);
    }
    const progress = t.progress
      ? h(
          "div",
          {},
          h("progress", { max: 1, value: t.progress.fraction, "aria-label": "Progress" }),
          ` ${Math.round(t.progress.fraction * 100)}% ${t.progress.message || ""}`,
        )
      : null;
    fill(
      body,
      h("div", { class: "row" }, stateBadge(t.state), t.cancel_requested ? h("span", { class: "tag" }, "cancel requested") : null, actions),
      t.unschedulable ? h("p", { class: "notice warn" }, `Cannot be scheduled: ${t.unschedulable}`) : null,
      h(
        "dl",
        { class: "facts" },
        row("Queue", h("a", { href: `#/tasks?q=${encodeURIComponent(`queue:"${t.queue}"`)}` }, t.queue)),
        row("Kind", t.kind),
        row("Priority", t.priority),
        row("Tags", (t.tags || []).join(", ")),
        row("Attempts", `${t.attempts} of ${t.attempt_limit ?? t.max_attempts}`),
        row("Created", ago(t.created_at)),
        row("Runs at", t.state === "scheduled" ? ago(t.run_at) : null),
        row("Expires", t.expires_at ? ago(t.expires_at) : null),
        row("Finished", t.finished_at ? ago(t.finished_at) : null),
        row("Worker", lease ? h("span", { class: "mono" }, lease.worker_id) : null),
        row("Lease expires", lease ? ago(lease.expires_at) : null),
        row("Progress", progress),
        row("Workflow", t.workflow_id ? h("a", { href: `#/workflows/${t.workflow_id}` }, `node ${t.node} of ${shortId(t.workflow_id)}`) : null),
        row("Parents", family ? links(family.parents) : t.parent_count || null),
        row("Children", family ? links(family.children) : null),
        row("Idempotency key", t.idempotency_key),
        row("Trace", t.traceparent ? h("span", { class: "mono" }, t.traceparent) : null),
      ),
      t.error ? [h("h2", {}, "Error"), h("pre", { class: "error-text", tabindex: 0 }, t.error)] : null,
      h("h2", {}, "Payload"),
      jsonBlock(ctx.me.payloads ? t.payload : undefined, "Payload"),
      t.result !== undefined && t.result !== null || !ctx.me.payloads ? [h("h2", {}, "Result"), jsonBlock(ctx.me.payloads ? t.result : undefined, "Result")] : null,
      h("h2", {}, "Attempts"),
      table("Attempts, oldest first", ["#", "Worker", "Started", "Ran for", "Outcome", "Error"], attempts, "Not started yet."),
      h("h2", {}, "Log"),
      logs.lines.length
        ? h("pre", { class: "log", tabindex: 0, "aria-label": "Task log" }, logs.lines.map((l) => `${l.at}  #${l.attempt}  ${l.line}\n`))
        : h("p", { class: "muted" }, "Nothing logged."),
    );
  }
  await refresh();
  return { refresh };
}
