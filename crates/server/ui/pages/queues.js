// Queues: counts, weight, limits, paused state and the age of the oldest ready task; pause and
// resume, change weight and limits, purge ready tasks (cancelled, with confirmation).

import { get, patch, post, query } from "../api.js";
import { actionButton, confirmDialog, fill, h, ms, notice, table } from "../dom.js";

/**
 * Retries or cancels (`action`) everything `filter` matches as a job on the server
 * (`POST /v1/tasks/jobs`), following its progress until it ends; answers the finished job.
 * The job goes on if the page is closed.
 */
export async function bulkAll(action, filter, progress) {
  let job = await post("/v1/tasks/jobs", { action, filter });
  progress(job, true);
  while (job.state === "running") {
    await new Promise((done) => setTimeout(done, 300));
    job = await get(`/v1/tasks/jobs/${job.id}`);
    progress(job, job.state === "running");
  }
  if (job.state !== "done") throw new Error(`The job stopped: ${job.error || "the server is shutting down"} (${job.changed} changed).`);
  return job;
}

function limitsText(l) {
  if (!l) return "none";
  const parts = [];
  if (l.concurrency) parts.push(`${l.concurrency} at once`);
  if (l.key_concurrency) parts.push(`${l.key_concurrency} per key`);
  if (l.rate) parts.push(`${l.rate}`);
  if (l.key_rate) parts.push(`${l.key_rate} per key`);
  return parts.length ? parts.join(", ") : "none";
}

function editor(q, status, done) {
  const id = (s) => `q-${s}-${q.name.replace(/[^a-zA-Z0-9_-]/g, "_")}`;
  const l = q.limits || {};
  const field = (name, label, value, type = "text") =>
    h("div", { class: "field" }, h("label", { for: id(name) }, label), h("input", { id: id(name), name, type, value: value ?? "" }));
  const form = h(
    "form",
    { class: "editor", "aria-label": `Settings of queue ${q.name}` },
    field("weight", "Weight (1 to 1000)", q.weight, "number"),
    field("concurrency", "At most running at once", l.concurrency, "number"),
    field("rate", "Rate (e.g. 10/s, 600/m)", l.rate),
    h("button", { type: "submit" }, "Save"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = (n) => form.elements[n].value.trim();
    const limits = { ...l };
    delete limits.concurrency;
    delete limits.rate;
    if (v("concurrency")) limits.concurrency = Number(v("concurrency"));
    if (v("rate")) limits.rate = v("rate");
    try {
      await patch(`/v1/queues/${encodeURIComponent(q.name)}`, { weight: Number(v("weight")), limits });
      notice(status, `Saved queue ${q.name}.`);
      await done();
    } catch (e) {
      notice(status, `${q.name}: ${e.field ? `${e.field}: ` : ""}${e.message}`, "error");
    }
  });
  return form;
}

export async function render(main, ctx) {
  const status = h("div");
  const list = h("div");
  fill(main, h("h1", {}, "Queues"), status, list);
  const can = ctx.me.operate;

  async function refresh() {
    const { queues } = await get("/v1/queues");
    const name = (q) => encodeURIComponent(q.name);
    const rows = queues.map((q) => [
      h("a", { href: `#/tasks?q=${encodeURIComponent(`queue:"${q.name}"`)}` }, q.name),
      q.paused ? h("span", { class: "badge s-paused" }, "paused") : h("span", { class: "badge s-running" }, "active"),
      q.ready,
      q.scheduled,
      q.running,
      h("a", { href: `#/dead?q=${encodeURIComponent(`queue:"${q.name}"`)}` }, q.failed),
      q.oldest_ready_ms !== undefined ? ms(q.oldest_ready_ms) : "",
      q.weight,
      limitsText(q.limits),
      q.unschedulable || 0,
      can
        ? h(
            "div",
            { class: "actions" },
            q.paused
              ? actionButton("Resume", async () => {
                  await post(`/v1/queues/${name(q)}/resume`);
                  notice(status, `Resumed ${q.name}.`);
                  await refresh();
                }, status, { "aria-label": `Resume queue ${q.name}` })
              : actionButton("Pause", async () => {
                  await post(`/v1/queues/${name(q)}/pause`);
                  notice(status, `Paused ${q.name}: no new task starts until it is resumed.`);
                  await refresh();
                }, status, { "aria-label": `Pause queue ${q.name}` }),
            actionButton("Purge ready", async () => {
              const ok = await confirmDialog(`Cancel all ${q.ready} ready tasks of queue ${q.name}? They will not run.`, "Purge");
              if (!ok) return;
              const done = await bulkAll("cancel", { queue: q.name, state: "ready" }, (t, more) =>
                notice(status, `Purging ${q.name}: ${t.changed} cancelled${more ? "…" : "."}`),
              );
              notice(status, `Purged ${q.name}: ${done.changed} ready tasks cancelled, ${done.skipped} had moved on.`);
              await refresh();
            }, status, { class: "danger", "aria-label": `Purge ready tasks of queue ${q.name}`, disabled: q.ready === 0 }),
            h("details", {}, h("summary", {}, "Edit", h("span", { class: "sr-only" }, ` queue ${q.name}`)), editor(q, status, refresh)),
          )
        : null,
    ]);
    const columns = ["Queue", "State", "Ready", "Scheduled", "Running", "Dead", "Oldest ready", "Weight", "Limits", "Unschedulable"];
    if (can) columns.push("Actions");
    fill(list, table(`${queues.length} queues`, columns, rows, "No queues yet: submit a task to make one."));
  }
  await refresh();
  return { refresh };
}
