// The dashboard's frame: logging in, the pages by their address (`#/tasks?q=...`), and live
// updates. Each page module exports `render(main, ctx)`, which builds the page and answers with
// `refresh()`, run again (at most once a second) when events arrive.

import { ApiError, follow, get, setToken, token } from "./api.js";
import { fill, h, notice } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as queues from "./pages/queues.js";
import * as tasks from "./pages/tasks.js";
import * as task from "./pages/task.js";
import * as workflows from "./pages/workflows.js";
import * as workers from "./pages/workers.js";
import * as cron from "./pages/cron.js";
import * as audit from "./pages/audit.js";

const PAGES = [
  [/^\/$/, overview.render, "Overview"],
  [/^\/queues$/, queues.render, "Queues"],
  [/^\/tasks$/, tasks.render, "Tasks"],
  [/^\/dead$/, tasks.renderDead, "Dead letters"],
  [/^\/tasks\/([0-9a-f-]{36})$/, task.render, "Task"],
  [/^\/workflows$/, workflows.renderList, "Workflows"],
  [/^\/workflows\/([0-9a-f-]{36})$/, workflows.render, "Workflow"],
  [/^\/workers$/, workers.render, "Workers"],
  [/^\/cron$/, cron.render, "Cron"],
  [/^\/audit$/, audit.render, "Audit log"],
];

let me = null;
let current = null; // { refresh }
let generation = 0;

function route() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search] = raw.split("?");
  return { path, params: new URLSearchParams(search || "") };
}

/** Goes to another address in the dashboard (`#/tasks?q=...`). */
export function go(path) {
  location.hash = `#${path}`;
}

async function show() {
  const main = document.getElementById("main");
  const { path, params } = route();
  const found = PAGES.find(([re]) => re.test(path));
  const mine = ++generation;
  current = null;
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const here = target === "/" ? path === "/" : path === target || (path.startsWith(`${target}/`) && target !== "/dead");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    document.title = "Not found · Taskwarden";
    fill(main, h("h1", {}, "Not found"), h("p", {}, "No page at this address. ", h("a", { href: "#/" }, "Go to the overview.")));
    return;
  }
  const [re, render, title] = found;
  document.title = `${title} · Taskwarden`;
  fill(main);
  try {
    const page = await render(main, { me, params, match: path.match(re), go });
    if (mine === generation) current = page || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return login(e.message);
    fill(main, h("h1", {}, title));
    const status = h("div");
    main.append(status);
    notice(status, e.message, "error");
  }
  main.focus({ preventScroll: true });
}

/** The login form: a token, kept for this tab. */
function login(why) {
  document.body.classList.add("logged-out");
  const main = document.getElementById("main");
  const status = h("div");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "login" },
    h("h1", {}, "Log in"),
    h("p", {}, "Give an API token (made with ", h("code", {}, "taskwarden token create"), "). It is kept in this tab only."),
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit" }, "Log in"),
    status,
  );
  if (why) notice(status, why, "error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    try {
      await start();
    } catch (e) {
      setToken(null);
      notice(status, e.message, "error");
    }
  });
  fill(main, form);
  document.title = "Log in · Taskwarden";
  input.focus();
}

function logout() {
  setToken(null);
  stopLive();
  me = null;
  fill(document.getElementById("who"));
  login();
}

let live = null;

function startLive() {
  stopLive();
  const ctrl = new AbortController();
  live = ctrl;
  let pending = null;
  const status = document.getElementById("live");
  follow(
    ctrl.signal,
    () => {
      if (pending) return;
      pending = setTimeout(async () => {
        pending = null;
        if (current && current.refresh && !document.hidden && !busy()) {
          try {
            await current.refresh();
          } catch {
            // The next event tries again.
          }
        }
      }, 1000);
    },
    (up) => {
      status.textContent = up === "off" ? "Not live: no event log" : up ? "Live" : "Reconnecting…";
      status.className = up === true ? "live up" : "live";
    },
  );
}

/** Whether the user is in the middle of something a redraw would lose (typing, a dialog). */
function busy() {
  const a = document.activeElement;
  return Boolean(document.querySelector("dialog[open], details[open]")) || (a && ["INPUT", "SELECT", "TEXTAREA"].includes(a.tagName) && a.type !== "checkbox");
}

function stopLive() {
  if (live) live.abort();
  live = null;
}

/** Learns who the token is, then shows the page the address names. */
async function start() {
  me = await get("/v1/me");
  document.body.classList.remove("logged-out");
  document.body.classList.toggle("can-operate", me.operate);
  document.body.classList.toggle("can-admin", me.admin);
  for (const li of document.querySelectorAll("[data-needs=admin]")) li.hidden = !me.admin;
  const who = document.getElementById("who");
  fill(
    who,
    h("span", {}, me.open ? "Open server (loopback, no tokens)" : `${me.name} · ${me.role}`),
    me.payloads ? null : h("span", { class: "tag" }, "payloads hidden"),
    me.open ? null : h("button", { type: "button", class: "link", onclick: logout }, "Log out"),
  );
  startLive();
  await show();
}

window.addEventListener("hashchange", () => {
  if (me) show();
});
document.addEventListener("visibilitychange", () => {
  if (!me) return;
  if (document.hidden) stopLive();
  else {
    startLive();
    if (current && current.refresh) current.refresh().catch(() => {});
  }
});

start().catch((e) => {
  if (e instanceof ApiError && e.status === 401) login(token() ? e.message : null);
  else fill(document.getElementById("main"), h("h1", {}, "Cannot reach the server"), h("p", { role: "alert" }, e.message));
});
