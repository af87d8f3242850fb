// DOM building and formatting helpers. Text from the server only ever becomes
// text nodes or attribute values: nothing here parses HTML.

/**
 * Create an element: h("a", {href: "/", class: "x", onclick: fn}, "text", child).
 * Attributes that are null, undefined or false are left out; true sets an empty
 * attribute; "on…" functions become listeners. Children may be nested arrays.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  el.append(...nodes(children));
  return el;
}

function nodes(children) {
  return children
    .flat(Infinity)
    .filter((c) => c != null && c !== false && c !== "")
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren(...nodes(children));
  return el;
}

const UNFINISHED = new Set(["QUEUED", "RUNNING"]);

export const JOB_STATES = ["REJECTED", "QUEUED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"];

export const isUnfinished = (job) => UNFINISHED.has(job.state);

/** The state as shown: "COMPLETE (stopped early)" when it was stopped early. */
export function stateText(job) {
  return job.state === "COMPLETE" && job.stopped_early ? "COMPLETE (stopped early)" : job.state;
}

export function stateBadge(job, attrs = {}) {
  return h("span", { ...attrs, class: `badge state-${job.state}` }, stateText(job));
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** 4 significant digits, without trailing zeros: 0.01235, 1, 12350. */
export function num4(x) {
  return typeof x === "number" && Number.isFinite(x) ? String(Number(x.toPrecision(4))) : "";
}

/** "12s", "3m 10s", "1h 02m". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  const m = Math.floor(s / 60);
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** A Date from unix seconds or an ISO string (null when neither). */
export function toDate(when) {
  if (when == null || when === "") return null;
  const d = typeof when === "number" ? new Date(when * 1000) : new Date(when);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "just now", "5 min ago", "3 h ago", "2 d ago", then the date. */
function relative(date, now = Date.now()) {
  const s = (now - date.getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 30 * 86400) return `${Math.floor(s / 86400)} d ago`;
  return localDate(date);
}

const pad2 = (n) => String(n).padStart(2, "0");

/** Local "2024-05-01" and "13:05:22". */
export function localDate(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}
export function localClock(d) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/**
 * A <time> showing a relative time; refreshRelativeTimes() keeps it current.
 * The exact local time is in its title.
 */
export function relTime(when) {
  const d = toDate(when);
  if (!d) return "";
  return h(
    "time",
    { datetime: d.toISOString(), title: `${localDate(d)} ${localClock(d)}`, "data-rel": true },
    relative(d),
  );
}

export function refreshRelativeTimes(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-rel]")) {
    const text = relative(new Date(el.dateTime), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

/** A "Copy" button that copies text() to the clipboard (failure is ignored). */
export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "secondary" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1500);
    } catch {
      // No clipboard (insecure context, denied): the text is selectable anyway.
    }
  });
  return button;
}

/** A table with a header row; th cells get scope="col". */
export function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows),
  );
}

// Live regions stay in the page (empty until used; CSS collapses them) so that
// screen readers announce a message when it is set.

/** An element with role="alert" for errors. */
export function alertBox(message = "") {
  return h("p", { class: "alert", role: "alert" }, message);
}

/** An element with role="status" for outcomes that are not errors. */
export function statusLine() {
  return h("p", { class: "status", role: "status" });
}

/** Set (or clear) the message of an alert or status element. */
export function say(el, message) {
  el.textContent = message ?? "";
}
