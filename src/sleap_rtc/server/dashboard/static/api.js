// The JSON API and its live event streams.

/** An API error: status 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

let csrfToken = null;
let unauthorized = () => {};

/** Set the CSRF token every non-GET request sends (from login or the session). */
export function setCsrfToken(token) {
  csrfToken = token;
}

/** What to do on a 401: the app sends the user to the login page. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * One API call. Resolves to {data, eventId}; throws ApiError on a non-2xx answer.
 * A 401 calls the unauthorized handler first unless `authRedirect` is false.
 */
export async function request(method, path, { body, signal, authRedirect = true } = {}) {
  const init = { method, signal, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "NETWORK", "Could not reach the server. Check your connection.");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && authRedirect) unauthorized();
    const error = data?.error;
    throw new ApiError(
      response.status,
      error?.code ?? `HTTP_${response.status}`,
      error?.message ?? fallbackMessage(response),
    );
  }
  return { data, eventId: response.headers.get("X-Event-Id") };
}

function fallbackMessage(response) {
  if (response.status === 429) return "Too many attempts. Wait a little and try again.";
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, body, opts) => request("POST", path, { ...opts, body });

/** Encode one path segment: room names and job ids come from users. */
export const seg = encodeURIComponent;

const RETRY_MS = 5000;

/**
 * Follow a server-sent event stream from the snapshot identified by `eventId`.
 *
 * `on` maps event names to handlers of the parsed JSON data. On "reset" (the
 * server can't replay what was missed) `resync()` must fetch a new snapshot and
 * resolve to its event id; the stream then reopens from there. `onStatus` gets
 * "live" or "reconnecting". Returns a function that closes the stream for good.
 */
export function follow(path, eventId, { on, resync, onStatus = () => {} }) {
  let source = null;
  let lastId = eventId;
  let timer = null;
  let closed = false;

  const later = (fn) => {
    clearTimeout(timer);
    if (!closed) timer = setTimeout(fn, RETRY_MS);
  };

  function open() {
    if (closed) return;
    const url = lastId ? `${path}?after=${encodeURIComponent(lastId)}` : path;
    const es = new EventSource(url);
    source = es;
    es.onopen = () => onStatus("live");
    es.onerror = () => {
      if (es !== source) return;
      onStatus("reconnecting");
      // CONNECTING: the browser retries by itself. CLOSED: the server refused
      // (logged out, room gone…): a 401 from the session check goes to login.
      if (es.readyState === EventSource.CLOSED) {
        source = null;
        get("/v1/auth/web/session").then(
          () => later(open),
          (err) => err.status !== 401 && later(open),
        );
      }
    };
    for (const [name, handle] of Object.entries(on)) {
      es.addEventListener(name, (event) => {
        if (es !== source) return;
        if (event.lastEventId) lastId = event.lastEventId;
        try {
          handle(JSON.parse(event.data));
        } catch (err) {
          console.error(`sleap-rtc: bad "${name}" event`, err);
        }
      });
    }
    es.addEventListener("reset", () => {
      if (es === source) reset();
    });
  }

  async function reset() {
    if (closed) return;
    source?.close();
    source = null;
    onStatus("reconnecting");
    try {
      lastId = await resync();
    } catch (err) {
      if (err.status !== 401) later(reset);
      return;
    }
    open();
  }

  open();
  return () => {
    closed = true;
    clearTimeout(timer);
    source?.close();
    source = null;
  };
}
