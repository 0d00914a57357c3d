// The dashboard's only way to the server: GET a JSON endpoint with the signed-in key.
// A refused key and a failing server are errors of their own, so the page can say which.

/** The key was refused (401): unknown, revoked or mistyped. */
export class KeyRefused extends Error {}

/** The server answered with an error, or did not answer at all. */
export class ServerFailed extends Error {}

const KEY_STORAGE = "analytics.apiKey";

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

/** GET /api/v1/<path>?<params> as JSON with ``Authorization: Bearer <key>``. */
export async function getJSON(key, path, params = {}) {
  const query = new URLSearchParams(params).toString();
  const url = `/api/v1/${path}${query ? `?${query}` : ""}`;
  let reply;
  try {
    reply = await fetch(url, {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch (error) {
    throw new ServerFailed(`the server did not answer (${error.message})`);
  }
  if (reply.status === 401) {
    throw new KeyRefused("this key was refused");
  }
  if (!reply.ok) {
    let detail = "";
    try {
      const body = await reply.json();
      detail = typeof body.detail === "string" ? `: ${body.detail}` : "";
    } catch {
      // Not JSON (a proxy's error page): the status says enough.
    }
    throw new ServerFailed(`${path} answered HTTP ${reply.status}${detail}`);
  }
  return reply.json();
}

/** A report's rows for a range (``since``/``until`` are YYYY-MM-DD). */
export function report(key, name, since, until, extra = {}) {
  return getJSON(key, `reports/${name}`, { since, until, ...extra });
}

/** Run ``task`` on every item with at most ``width`` running at once; results in order. */
export async function pooled(items, width, task) {
  const results = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  return results;
}
