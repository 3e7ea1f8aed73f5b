// Workers: who serves which queues and kinds, their capacity and what is used, labels, running
// tasks, last heartbeat; lost workers marked.

import { get } from "../api.js";
import { ago, fill, h, table } from "../dom.js";

export async function render(main) {
  const list = h("div");
  fill(main, h("h1", {}, "Workers"), list);

  async function refresh() {
    const { workers } = await get("/v1/workers");
    const kv = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    const rows = workers.map((w) => [
      h("span", { title: w.id }, w.name),
      w.status === "lost" ? h("span", { class: "badge s-failed" }, "lost") : h("span", { class: "badge s-succeeded" }, "live"),
      w.queues.join(", "),
      (w.kinds || []).join(", ") || "any",
      h("a", { href: `#/tasks?q=${encodeURIComponent(`worker:${w.id}`)}` }, `${w.running} of ${w.concurrency}`),
      kv(w.capacity),
      kv(w.labels),
      ago(w.last_seen_at),
      ago(w.registered_at),
    ]);
    fill(
      list,
      table(
        `${workers.length} workers`,
        ["Worker", "Status", "Queues", "Kinds", "Running", "Capacity", "Labels", "Last heartbeat", "Registered"],
        rows,
        "No worker has registered yet.",
      ),
    );
  }
  await refresh();
  return { refresh };
}
