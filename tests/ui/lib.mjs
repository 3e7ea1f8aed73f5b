// What the dashboard tests share: a real server process on a fresh SQLite directory, calls to
// its API over real HTTP, a worker played by the test through the worker protocol, the system
// Chromium, and the accessibility check.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../..");
export const SHOTS = process.env.TASKWARDEN_UI_SHOTS || join(ROOT, "target/ui-screenshots");
const BINARY = process.env.TASKWARDEN_BIN || join(ROOT, "target/debug/taskwarden");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

async function freePort() {
  return new Promise((done, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => done(port));
    });
    s.on("error", fail);
  });
}

/** Starts `taskwarden server` on a fresh data directory; answers { url, stop }. */
export async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "taskwarden-ui-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(BINARY, ["server", "--data-dir", dir, "--listen", `127.0.0.1:${port}`, ...extra], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  const deadline = Date.now() + 30000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the server exited: ${log}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the server did not start: ${log}`);
    await new Promise((d) => setTimeout(d, 100));
  }
  return {
    url,
    log: () => log,
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((d) => (proc.exitCode !== null ? d() : proc.on("exit", d)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An API client for `url` with `token` (none: the open server). Throws on non-2xx. */
export function client(url, token) {
  async function call(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) {
      const e = new Error(`${method} ${path}: ${r.status} ${text}`);
      e.status = r.status;
      e.body = data;
      throw e;
    }
    return data;
  }
  return {
    call,
    get: (p) => call("GET", p),
    post: (p, b) => call("POST", p, b),
    /** Status only, never throwing: for the calls that must be refused. */
    async status(method, path, body) {
      try {
        await call(method, path, body);
        return 200;
      } catch (e) {
        if (e.status) return e.status;
        throw e;
      }
    },
  };
}

/** A worker played by the test: registers, then leases and reports through the protocol. */
export async function worker(api, queues, concurrency = 1000) {
  const me = await api.post("/v1/workers", { name: "ui-test", queues, concurrency });
  return {
    id: me.id,
    async fetch(limit = 1000, reports = []) {
      const r = await api.post(`/v1/workers/${me.id}/fetch`, { queues, limit, wait_ms: 0, reports });
      return r.tasks;
    },
    report: (reports) => api.post(`/v1/workers/${me.id}/reports`, { reports }),
    /** A success after `ranMs` of work, as a worker's own clock would tell it. */
    succeed: (t, result = null, ranMs = 2) => ({ task_id: t.id, lease: t.lease, outcome: { status: "succeeded", result }, ran_us: ranMs * 1000 }),
    fail: (t, error) => ({ task_id: t.id, lease: t.lease, outcome: { status: "failed", error, permanent: true } }),
  };
}

export async function launch() {
  const { chromium } = await import("playwright-core");
  mkdirSync(SHOTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/** Saves a screenshot of the page as an artefact of the run. */
export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const require = createRequire(import.meta.url);

/** The page's accessibility violations rated serious or critical, by axe-core. */
export async function seriousViolations(page) {
  // Evaluated through the browser's debugging protocol, which the page's Content-Security-Policy
  // (scripts from the server only) does not apply to.
  if (!(await page.evaluate(() => Boolean(globalThis.axe)))) await page.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  const result = await page.evaluate(async () => await globalThis.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")}`);
}

/** Waits until `check()` answers truthy, polling; fails with `what` after `ms`. */
export async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((d) => setTimeout(d, 100));
  }
}
