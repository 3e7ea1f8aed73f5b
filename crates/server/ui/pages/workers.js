// Workers: who serves which queues and kinds, their capacity and what is used, labels, running
// tasks, last heartbeat; lost workers marked, and removable by operators.

import { del, get } from "../api.js";
import { actionButton, ago, fill, h, notice, table } from "../dom.js";

export async function render(main, ctx) {
  const status = h("div");
  const list = h("div");
  fill(main, h("h1", {}, "Workers"), status, list);

  async function refresh() {
    const { workers } = await get("/v1/workers");
    const kv = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    const can = ctx.me.operate;
    const rows = workers.map((w) => {
      const cells = [
        h("span", { title: w.id }, w.name),
        w.status === "lost" ? h("span", { class: "badge s-failed" }, "lost") : h("span", { class: "badge s-succeeded" }, "live"),
        w.queues.join(", "),
        (w.kinds || []).join(", ") || "any",
        h("a", { href: `#/tasks?q=${encodeURIComponent(`worker:${w.id}`)}` }, `${w.running} of ${w.concurrency}`),
        kv(w.capacity),
        kv(w.labels),
        ago(w.last_seen_at),
        ago(w.registered_at),
      ];
      if (can) {
        cells.push(
          w.status === "lost" && w.running === 0
            ? actionButton("Remove", async () => {
                await del(`/v1/workers/${encodeURIComponent(w.id)}`);
                notice(status, `Removed ${w.name} (${w.id}).`);
                await refresh();
              }, status, { "aria-label": `Remove: lost worker ${w.name} ${w.id}` })
            : "",
        );
      }
      return cells;
    });
    const columns = ["Worker", "Status", "Queues", "Kinds", "Running", "Capacity", "Labels", "Last heartbeat", "Registered"];
    if (can) columns.push("Actions");
    fill(list, table(`${workers.length} workers`, columns, rows, "No worker has registered yet."));
  }
  await refresh();
  return { refresh };
}
