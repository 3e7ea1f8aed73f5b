// The audit log (admins): who changed what, and every refused request.

import { get, query } from "../api.js";
import { ago, fill, h, table } from "../dom.js";

export async function render(main) {
  const list = h("div");
  fill(main, h("h1", {}, "Audit log"), list);

  async function refresh() {
    const entries = (await get(`/v1/audit${query({ limit: 10000 })}`)).entries.reverse().slice(0, 200);
    const rows = entries.map((e) => [ago(e.at), e.actor, e.action === "denied" ? h("span", { class: "badge s-failed" }, "denied") : e.action, e.target, e.detail || ""]);
    fill(list, table("The newest 200 entries", ["When", "Who", "Action", "Target", "Detail"], rows, "Nothing recorded."));
  }
  await refresh();
  return { refresh };
}
