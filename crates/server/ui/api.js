// Talking to the API, as any client does: the token the user logged in with goes in the
// Authorization header (kept for this tab only), never in a cookie, so no other site can make
// the browser use it.

const KEY = "taskwarden.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

/** An answer other than 2xx: `status`, and the API's error body (`code`, `message`, `field`). */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.field = e.field;
  }
}

function headers(json) {
  const h = {};
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

/** Calls the API; answers the parsed JSON, or throws an ApiError. */
export async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** `?a=1&b=2` from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows the event stream (`GET /v1/events`, Server-Sent Events read through fetch so the
 * token goes in a header), calling `onEvent(type, data)` for each event, until `signal` aborts.
 * Reconnects after a drop, resuming from the last id seen. `onState` hears `true` (following),
 * `false` (reconnecting) or `"off"` (the server keeps no event log: it gives up).
 */
export async function follow(signal, onEvent, onState) {
  let last = "now";
  while (!signal.aborted) {
    try {
      const h = headers(false);
      h.Accept = "text/event-stream";
      if (last !== "now") h["Last-Event-ID"] = last;
      const r = await fetch(`/v1/events${query({ after: last === "now" ? "now" : undefined })}`, { headers: h, signal });
      if (r.status === 409) {
        onState("off");
        return;
      }
      if (!r.ok) throw new ApiError(r.status, null);
      onState(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let at;
        while ((at = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          let id = null, type = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (id) last = id;
          if (data) {
            try {
              onEvent(type, JSON.parse(data));
            } catch {
              // A line that is not JSON is not ours to show.
            }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        onState(false);
        return;
      }
    }
    onState(false);
    await new Promise((done) => setTimeout(done, 2000));
  }
}
