// The web dashboard, end to end: a real `taskwarden server` process on a fresh SQLite file,
// driven in Debian's Chromium by playwright-core, with the test playing the workers over the
// real worker protocol. Each step saves a screenshot (target/ui-screenshots/) and runs axe-core.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { client, launch, seriousViolations, shot, startServer, until, worker } from "./lib.mjs";

describe("the dashboard", () => {
  let server, browser, page, open, admin, reader, adminToken, readerToken;

  before(async () => {
    server = await startServer();
    open = client(server.url);
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("pageerror", (e) => console.error("page error:", e.message));
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** Goes to a dashboard address and waits for its heading. */
  async function visit(hash, heading) {
    await page.goto(`${server.url}/ui/#${hash}`);
    await page.getByRole("heading", { level: 1, name: heading }).waitFor();
  }

  async function accessible(name) {
    await shot(page, name);
    assert.deepEqual(await seriousViolations(page), [], `${name}: serious accessibility violations`);
  }

  test("a loopback server without tokens opens at / with no login", async () => {
    await page.goto(server.url);
    assert.match(page.url(), /\/ui\/$/);
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await page.getByText("Open server (loopback, no tokens)").waitFor();
    await accessible("overview-open");
  });

  test("a cross-site form post is refused (CSRF), even on the open server", async () => {
    await open.post("/v1/tasks", { queue: "mail", kind: "send", payload: {} });
    // A page on another origin posts a form to pause the queue, as an attacker's page would.
    const evil = createServer((req, res) => {
      res.setHeader("Content-Type", "text/html");
      res.end(`<!doctype html><title>evil</title>
        <form id="f" method="POST" action="${server.url}/v1/queues/mail/pause"><input name="x" value="1"></form>
        <script>
          fetch("${server.url}/v1/queues/mail/pause", { method: "POST", mode: "no-cors" })
            .finally(() => document.getElementById("f").submit());
        </script>`);
    });
    await new Promise((d) => evil.listen(0, "127.0.0.1", d));
    try {
      const refused = page.waitForResponse((r) => r.url().endsWith("/v1/queues/mail/pause") && r.request().resourceType() === "document");
      await page.goto(`http://127.0.0.1:${evil.address().port}/`);
      const answer = await refused;
      assert.equal(answer.status(), 403, "the form post is refused");
      // The answer arriving is not the navigation done: the next test's page.goto would race it
      // (and was interrupted by it on a busy machine).
      await page.waitForURL(`${server.url}/v1/queues/mail/pause`);
      const mail = (await open.get("/v1/queues")).queues.find((q) => q.name === "mail");
      assert.equal(mail.paused, false, "neither the form nor the no-cors fetch paused the queue");
    } finally {
      evil.close();
    }
  });

  test("once tokens exist the dashboard asks for one, and an admin logs in", async () => {
    adminToken = (await open.post("/v1/tokens", { name: "ui-admin", role: "admin" })).token;
    admin = client(server.url, adminToken);
    // From the first token on, every request needs one.
    assert.equal(await open.status("GET", "/v1/queues"), 401);
    readerToken = (await admin.post("/v1/tokens", { name: "ui-reader", role: "read" })).token;
    reader = client(server.url, readerToken);
    await page.goto(`${server.url}/ui/`);
    await page.getByRole("heading", { name: "Log in" }).waitFor();
    await accessible("login");
    await page.getByLabel("Token").fill("not-a-token");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("unknown token").waitFor();
    await page.getByLabel("Token").fill(adminToken);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await page.getByText("ui-admin · admin").waitFor();
  });

  test("find a failed task by a payload field, retry it, and see it succeed live", async () => {
    const ids = {};
    for (let c = 30; c < 50; c++) {
      ids[c] = (await admin.post("/v1/tasks", { queue: "billing", kind: "charge", payload: { customer_id: c }, max_attempts: 1 })).id;
    }
    const w = await worker(admin, ["billing"]);
    const leased = await w.fetch();
    assert.equal(leased.length, 20);
    const reports = leased.map((t) => (t.payload.customer_id === 42 ? w.fail(t, "card declined") : w.succeed(t, { charged: true })));
    await w.report(reports);
    assert.equal((await admin.get(`/v1/tasks/${ids[42]}`)).state, "failed");

    await visit("/tasks", "Tasks");
    await page.getByLabel("Search tasks").fill("payload.customer_id=42");
    await page.getByRole("button", { name: "Search", exact: true }).click();
    const row = page.getByRole("row").filter({ hasText: "charge" });
    await until("one matching row", async () => (await row.count()) === 1);
    await page.getByRole("row").filter({ hasText: "failed" }).first().waitFor();
    await accessible("tasks-search");

    await row.getByRole("link").first().click();
    await page.getByRole("heading", { level: 1, name: /^Task / }).waitFor();
    await page.getByText("card declined").first().waitFor();
    await page.getByText('"customer_id": 42').waitFor();
    await accessible("task-failed");
    await page.evaluate(() => (globalThis.notReloaded = true));
    await page.getByRole("button", { name: "Retry" }).click();
    await page.getByText("Sent back to its queue").waitFor();
    // The worker takes it again and succeeds; the page shows it without being reloaded.
    const again = await until("the retried task to be leased", async () => (await w.fetch()).find((t) => t.id === ids[42]));
    await w.report([w.succeed(again, { charged: true, retried: true })]);
    await page.locator(".badge.s-succeeded").first().waitFor({ timeout: 15000 });
    assert.equal(await page.evaluate(() => globalThis.notReloaded), true, "the page was not reloaded");
    await page.getByText('"retried": true').waitFor();
    await accessible("task-succeeded");
  });

  test("bulk-cancel everything a search matches, as one server-side run", async () => {
    for (let i = 0; i < 30; i++) await admin.post("/v1/tasks", { queue: "bulk", kind: "old-job", payload: { i } });
    await admin.post("/v1/tasks", { queue: "bulk-keep", kind: "old-job", payload: {} });
    await page.goto(`${server.url}/ui/#/tasks?q=${encodeURIComponent("queue:bulk kind:old-job")}`);
    await page.getByRole("heading", { level: 1, name: "Tasks" }).waitFor();
    await until("30 rows", async () => (await page.getByRole("row").filter({ hasText: "old-job" }).count()) === 30);
    await page.getByRole("button", { name: "Cancel all matching" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel all" }).click();
    await page.getByText("Cancel all matching: 30 done").waitFor();
    const cancelled = await admin.get("/v1/tasks?queue=bulk&state=cancelled&limit=100");
    assert.equal(cancelled.tasks.length, 30);
    const kept = await admin.get("/v1/tasks?queue=bulk-keep");
    assert.equal(kept.tasks[0].state, "ready", "a task the search did not match is untouched");
  });

  test("pause a queue", async () => {
    await visit("/queues", "Queues");
    await page.getByRole("button", { name: "Pause queue billing" }).click();
    await page.getByText("Paused billing").waitFor();
    const billing = (await admin.get("/v1/queues")).queues.find((q) => q.name === "billing");
    assert.equal(billing.paused, true);
    await page.getByRole("button", { name: "Resume queue billing" }).waitFor();
    await accessible("queues");
  });

  test("run a cron schedule now", async () => {
    await admin.post("/v1/cron", { name: "nightly-report", schedule: "0 0 3 * * *", task: { queue: "reports", kind: "report" } });
    await visit("/cron", "Cron schedules");
    await page.getByRole("button", { name: "Run now: nightly-report" }).click();
    await page.getByText("Ran nightly-report now").waitFor();
    const reports = await admin.get("/v1/tasks?queue=reports");
    assert.equal(reports.tasks.length, 1, "one task submitted by run now");
    await accessible("cron");
  });

  test("a workflow with a 10,000-task fan-out shows folded, with its speedup", async () => {
    const wf = await admin.post("/v1/workflows", { name: "big-fan-out", tasks: [{ id: "split", kind: "split", queue: "wf" }] });
    const w = await worker(admin, ["wf"]);
    const [split] = await w.fetch(1);
    const children = Array.from({ length: 10000 }, (_, i) => ({ kind: "part", queue: "wf", payload: { i } }));
    await admin.post(`/v1/tasks/${split.id}/fan-out`, { lease: split.lease, children, join: { kind: "join", queue: "wf" } });
    let reports = [w.succeed(split, null, 50)];
    for (;;) {
      const got = await w.fetch(1000, reports);
      if (got.length === 0 && reports.length === 0) break;
      reports = got.map((t) => (t.kind === "join" ? w.succeed(t, { parts: 10000 }, 30) : w.succeed(t, null, 1 + (t.payload.i % 7))));
    }
    await until("the workflow to succeed", async () => (await admin.get(`/v1/workflows/${wf.id}`)).state === "succeeded", 60000);

    await visit(`/workflows/${wf.id}`, /^Workflow /);
    await page.getByText("split/* × 10000", { exact: true }).waitFor();
    // The graph: three boxes (split, its 10,000 children folded, the join) and two edges; the
    // critical path the speedup report found is marked and named.
    const graph = page.locator("svg.graph");
    await graph.getByText("split/*", { exact: true }).waitFor();
    assert.equal(await graph.locator("g.gnode").count(), 3);
    assert.equal(await graph.locator("path.edge").count(), 2);
    const report = (await admin.get(`/v1/workflows/${wf.id}`)).speedup;
    const critical = [...new Set(report.critical_nodes.map((i) => (i === 0 ? "split" : i === 10001 ? "split/join" : "split/*")))];
    assert.equal(await graph.locator("g.gnode.critical").count(), critical.length);
    await page.getByText(`critical path: ${critical.join(" → ")}`).waitFor();
    await page.getByText("T_serial (sum of run times)").waitFor();
    const speedup = await page.locator("dl.speedup dd").nth(2).textContent();
    assert.match(speedup, /^\d+\.\d\d×$/);
    await accessible("workflow");
    await visit("/workflows", "Workflows");
    await page.getByRole("link", { name: `…${wf.id.slice(-8)}` }).waitFor();
    await accessible("workflows");
  });

  test("overview, workers, dead letters and audit pages pass the accessibility check", async () => {
    for (const [hash, heading, name] of [
      ["/", "Overview", "overview"],
      ["/?range=week", "Overview", "overview-week"],
      ["/workers", "Workers", "workers"],
      ["/dead", "Dead letters", "dead-letters"],
      ["/audit", "Audit log", "audit"],
    ]) {
      await visit(hash, heading);
      await page.locator("main table, main .charts").first().waitFor();
      await accessible(name);
    }
    await visit("/audit", "Audit log");
    await page.getByText("queue.pause").first().waitFor();
  });

  test("a read-only token sees no actions and no payloads, and the API refuses it too", async () => {
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByLabel("Token").fill(readerToken);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("ui-reader · read").waitFor();
    await page.getByText("payloads hidden").waitFor();

    await visit("/tasks?q=queue:billing", "Tasks");
    await until("rows", async () => (await page.getByRole("row").filter({ hasText: "charge" }).count()) === 20);
    assert.equal(await page.getByRole("checkbox").count(), 0, "no selection");
    assert.equal(await page.getByRole("button", { name: /all matching|selected/ }).count(), 0, "no bulk actions");
    await accessible("tasks-read-only");
    await page.getByRole("row").filter({ hasText: "charge" }).first().getByRole("link").first().click();
    await page.getByText("Payload: hidden from this token.").waitFor();
    assert.equal(await page.getByRole("button", { name: /Retry|Cancel/ }).count(), 0);
    await visit("/queues", "Queues");
    assert.equal(await page.getByRole("button", { name: /Pause|Resume|Purge/ }).count(), 0);
    assert.equal(await page.getByRole("link", { name: "Audit log" }).isVisible(), false, "no audit page offered");

    // Straight to the API, the same token is refused what the pages do not offer.
    assert.equal(await reader.status("POST", "/v1/queues/billing/resume"), 403);
    assert.equal(await reader.status("POST", "/v1/tasks/cancel", { queue: "billing" }), 403);
    assert.equal(await reader.status("GET", "/v1/audit"), 403);
    assert.equal(await reader.status("GET", `/v1/tasks?q=${encodeURIComponent("payload.customer_id=42")}`), 403, "no probing payloads by search");
    const listed = await reader.get("/v1/tasks?queue=billing&limit=1");
    assert.equal(listed.tasks[0].payload, null, "payloads are not served");
  });
});

describe("the dashboard on a server without the event log", () => {
  let server, browser, page;

  before(async () => {
    server = await startServer(["--no-event-log"]);
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("the overview shows the counts, says there is no history, and does not try to be live", async () => {
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await client(server.url).post("/v1/tasks", { queue: "quiet", kind: "echo", payload: {} });
    await page.goto(`${server.url}/ui/`);
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await page.getByText("This server keeps no event log").waitFor();
    await page.getByText("Not live: no event log").waitFor();
    const ready = page.locator(".tile").filter({ has: page.locator(".tile-label", { hasText: /^Ready$/ }) }).locator(".tile-value");
    assert.equal((await ready.textContent()).trim(), "1", "the queue's counts still show");
    await shot(page, "overview-no-event-log");
    assert.deepEqual(await seriousViolations(page), [], "serious accessibility violations");
    assert.deepEqual(errors, []);
  });
});
