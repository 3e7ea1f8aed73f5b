// Cron schedules: next and last fire times; pause, resume, run now, and edit the schedule.

import { get, patch, post } from "../api.js";
import { actionButton, ago, fill, h, notice, table, taskLink } from "../dom.js";

export async function render(main, ctx) {
  const status = h("div");
  const list = h("div");
  fill(main, h("h1", {}, "Cron schedules"), status, list);
  const can = ctx.me.operate;

  function editor(c) {
    const safe = c.name.replace(/[^a-zA-Z0-9_-]/g, "_");
    const field = (name, label, value) =>
      h("div", { class: "field" }, h("label", { for: `cron-${name}-${safe}` }, label), h("input", { id: `cron-${name}-${safe}`, name, value }));
    const form = h(
      "form",
      { class: "editor", "aria-label": `Edit schedule ${c.name}` },
      field("schedule", "Schedule (cron, with seconds optional)", c.schedule),
      field("timezone", "Time zone", c.timezone),
      h("button", { type: "submit" }, "Save"),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await patch(`/v1/cron/${encodeURIComponent(c.name)}`, {
          schedule: form.elements.schedule.value.trim(),
          timezone: form.elements.timezone.value.trim(),
        });
        notice(status, `Saved ${c.name}.`);
        await refresh();
      } catch (e) {
        notice(status, `${c.name}: ${e.field ? `${e.field}: ` : ""}${e.message}`, "error");
      }
    });
    return form;
  }

  async function refresh() {
    const { schedules } = await get("/v1/cron");
    const name = (c) => encodeURIComponent(c.name);
    const rows = schedules.map((c) => {
      const cells = [
        c.name,
        h("code", {}, c.schedule),
        c.timezone,
        `${c.task.queue} / ${c.task.kind}`,
        c.paused ? h("span", { class: "badge s-paused" }, "paused") : ago(c.next_run_at),
        c.last_fired_at ? ago(c.last_fired_at) : "never",
      ];
      if (can) {
        cells.push(
          h(
            "div",
            { class: "actions" },
            actionButton("Run now", async () => {
              const t = await post(`/v1/cron/${name(c)}/run`);
              fill(status, h("p", { class: "notice info", role: "status" }, `Ran ${c.name} now: task `, taskLink(t.id), "."));
              await refresh();
            }, status, { "aria-label": `Run now: ${c.name}` }),
            actionButton(c.paused ? "Resume" : "Pause", async () => {
              await post(`/v1/cron/${name(c)}/${c.paused ? "resume" : "pause"}`);
              notice(status, `${c.paused ? "Resumed" : "Paused"} ${c.name}.`);
              await refresh();
            }, status, { "aria-label": `${c.paused ? "Resume" : "Pause"}: ${c.name}` }),
            h("details", {}, h("summary", {}, "Edit", h("span", { class: "sr-only" }, ` ${c.name}`)), editor(c)),
          ),
        );
      }
      return cells;
    });
    const columns = ["Name", "Schedule", "Time zone", "Task", "Next", "Last fired"];
    if (can) columns.push("Actions");
    fill(list, table(`${schedules.length} schedules`, columns, rows, "No cron schedules. Make one with taskwarden cron create."));
  }
  await refresh();
  return { refresh };
}
