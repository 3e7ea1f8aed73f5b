// Task search over every state, in the query language (`state:failed payload.customer_id=42`),
// answered by the server a page at a time; retry or cancel a selection, or everything the
// search matches (run on the server, with progress). Dead letters are this page, searching
// `state:failed`.

import { get, post, query } from "../api.js";
import { actionButton, ago, confirmDialog, fill, h, notice, stateBadge, table, taskLink } from "../dom.js";
import { bulkAll } from "./queues.js";

const PAGE = 50;
/** Most requests one "search on" makes while pages come out short (a rare match, many tasks). */
const MORE = 20;

const EXAMPLES = [
  "state:failed",
  "state:running queue:default",
  "payload.customer_id=42",
  'error:"timed out" after:1h',
  "kind:send_email tag:vip",
];

/** The creation time a task id (UUIDv7) carries. */
export function idTime(id) {
  return new Date(parseInt(id.replace(/-/g, "").slice(0, 12), 16));
}

export async function renderDead(main, ctx) {
  return render(main, ctx, { dead: true });
}

export async function render(main, ctx, { dead = false } = {}) {
  const base = dead ? "state:failed" : "";
  const q0 = ctx.params.get("q") ?? "";
  const status = h("div");
  const results = h("div");
  const input = h("input", {
    id: "search",
    name: "q",
    type: "search",
    value: q0,
    placeholder: dead ? "queue:mail error:timeout" : "state:failed payload.customer_id=42",
    "aria-describedby": "search-help",
    spellcheck: "false",
    autocomplete: "off",
  });
  const form = h(
    "form",
    { role: "search", class: "search" },
    h("label", { for: "search" }, dead ? "Search dead letters" : "Search tasks"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Search")),
    h(
      "p",
      { id: "search-help", class: "muted" },
      `Terms: state, queue, kind, tag, worker, error, after, before${ctx.me.payloads ? ", payload.<path>, result.<path>" : ""}. Try `,
      EXAMPLES.filter((e) => ctx.me.payloads || !e.includes("payload.")).map((e, i) => [i ? ", " : "", h("a", { href: `#/tasks?q=${encodeURIComponent(e)}` }, h("code", {}, e))]),
      ".",
    ),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    ctx.go(`${dead ? "/dead" : "/tasks"}?q=${encodeURIComponent(input.value.trim())}`);
  });
  const full = [base, q0].filter(Boolean).join(" ");
  const bulkBar = h("div", { class: "row bulk" });
  fill(main, h("h1", {}, dead ? "Dead letters" : "Tasks"), form, status, bulkBar, results);

  let cursors = [null]; // the cursor of each page seen; the last is the current page's
  let shown = [];
  const selected = new Set();

  let loading = 0;

  /**
   * A page from `cursor`. Each call answers within a bounded scan, so a rare match comes back
   * as short pages: they are topped up, up to MORE calls, and drawn as they arrive (`partial`),
   * so the page shows what it has found while it searches on.
   */
  async function load(cursor, partial) {
    const mine = ++loading;
    let tasks = [];
    let next = cursor;
    let asked = 0;
    do {
      const page = await get(`/v1/tasks${query({ q: full, limit: PAGE - tasks.length, cursor: next || undefined })}`);
      if (mine !== loading) return null; // a newer search took over
      tasks = tasks.concat(page.tasks);
      next = page.next_cursor || null;
      asked += 1;
      if (partial && next && tasks.length < PAGE && asked < MORE) partial({ tasks, next, searching: true });
    } while (next && tasks.length < PAGE && asked < MORE);
    return { tasks, next };
  }

  async function show(cursor) {
    const page = await load(cursor, draw);
    if (page) draw(page);
  }

  function draw(page) {
    shown = page.tasks;
    const can = ctx.me.operate;
    const pick = (t) =>
      h("input", {
        type: "checkbox",
        "aria-label": `Select task ${t.id}`,
        checked: selected.has(t.id),
        onchange: (ev) => {
          if (ev.target.checked) selected.add(t.id);
          else selected.delete(t.id);
          drawBulk();
        },
      });
    const rows = page.tasks.map((t) => {
      const cells = [
        taskLink(t.id),
        stateBadge(t.state),
        t.queue,
        t.kind,
        `${t.attempts}/${t.attempt_limit ?? t.max_attempts}`,
        ago(t.created_at),
        t.finished_at ? ago(t.finished_at) : "",
        t.error ? h("span", { class: "error-text", title: t.error }, t.error.slice(0, 80)) : "",
      ];
      return can ? [pick(t), ...cells] : cells;
    });
    const columns = ["Task", "State", "Queue", "Kind", "Attempts", "Created", "Finished", "Error"];
    if (can) columns.unshift(h("span", { class: "sr-only" }, "Select"));
    const older = page.searching
      ? h("span", { class: "muted", role: "status" }, `Searching older tasks, back to ${idTime(page.next).toLocaleString()}…`)
      : page.next
      ? h(
          "button",
          {
            type: "button",
            onclick: async () => {
              cursors.push(page.next);
              await show(page.next);
            },
          },
          `Older (searched back to ${idTime(page.next).toLocaleString()})`,
        )
      : null;
    const newer =
      cursors.length > 1
        ? h(
            "button",
            {
              type: "button",
              onclick: async () => {
                cursors.pop();
                await show(cursors[cursors.length - 1]);
              },
            },
            "Newer",
          )
        : null;
    const caption = full ? `Tasks matching ${full}` : "Every task, newest first";
    fill(
      results,
      table(caption, columns, rows, page.next ? "No match among the tasks searched so far; search older ones." : "No task matches."),
      h("div", { class: "row pager" }, newer, older),
    );
    drawBulk();
  }

  function drawBulk() {
    if (!ctx.me.operate) return fill(bulkBar);
    const ids = [...selected];
    const each = (label, verb) =>
      actionButton(`${label} selected (${ids.length})`, async () => {
        let done = 0, failed = 0;
        for (const id of ids) {
          try {
            await post(`/v1/tasks/${id}/${verb}`);
            done += 1;
          } catch {
            failed += 1;
          }
          notice(status, `${label}: ${done} done, ${failed} refused…`);
        }
        selected.clear();
        notice(status, `${label}: ${done} done${failed ? `, ${failed} refused (they had moved on)` : ""}.`);
        await refresh();
      }, status, { disabled: ids.length === 0 });
    const all = (label, action) =>
      actionButton(`${label} all matching`, async () => {
        const what = full || "every task";
        if (!(await confirmDialog(`${label} every task matching “${what}”? This runs on the server until done, even if you leave this page.`, `${label} all`))) return;
        const total = await bulkAll(action, { q: full || undefined }, (t, more) =>
          notice(status, `${label} all matching: ${t.changed} done, ${t.skipped} skipped of ${t.matched} looked at${more ? "…" : "."}`),
        );
        notice(status, `${label} all matching: ${total.changed} done, ${total.skipped} skipped (moved on meanwhile).`);
        await refresh();
      }, status, { class: "danger" });
    fill(bulkBar, each("Retry", "retry"), each("Cancel", "cancel"), all("Retry", "retry"), all("Cancel", "cancel"));
  }

  async function refresh() {
    try {
      await show(cursors[cursors.length - 1]);
    } catch (e) {
      notice(status, `${e.field ? `${e.field}: ` : ""}${e.message}`, "error");
      fill(results);
    }
  }
  await refresh();
  return { refresh };
}
