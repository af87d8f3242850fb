// The dashboard's router and page shell. Every dashboard URL serves index.html;
// this module picks the page from location.pathname and renders it into <main>.

import * as api from "./api.js";
import { h, fill, alertBox, say, refreshRelativeTimes } from "./dom.js";
import { loginPage } from "./pages/login.js";
import { roomsPage, roomPage } from "./pages/rooms.js";
import { workersPage } from "./pages/workers.js";
import { jobsPage } from "./pages/jobs.js";
import { jobPage } from "./pages/job.js";

const ROUTES = [
  { path: /^\/login$/, page: loginPage, public: true },
  { path: /^\/$/, page: roomsPage },
  { path: /^\/rooms\/([^/]+)$/, page: roomPage },
  { path: /^\/rooms\/([^/]+)\/workers$/, page: workersPage },
  { path: /^\/rooms\/([^/]+)\/jobs$/, page: jobsPage },
  { path: /^\/rooms\/([^/]+)\/jobs\/([^/]+)$/, page: jobPage },
];

const NOT_FOUND = "Not found (or you are not a member of this room)";

const main = document.getElementById("main");
const crumbs = document.getElementById("breadcrumb");
const live = document.getElementById("live");
const userName = document.getElementById("user-name");
const logout = document.getElementById("logout");
const flash = document.getElementById("flash");

let session = null; // {user, csrf_token} once known
let current = null; // {controller, cleanups, path, url} of the page on screen

/** Go to an in-app URL (path + query) and render it. */
function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function setSession(value) {
  session = value;
  api.setCsrfToken(value?.csrf_token ?? null);
  userName.textContent = value?.user?.username ?? "";
  logout.hidden = !value;
}

function loginUrl() {
  const here = location.pathname + location.search;
  return here.startsWith("/login") ? "/login" : `/login?next=${encodeURIComponent(here)}`;
}

api.onUnauthorized(() => {
  setSession(null);
  if (location.pathname !== "/login") navigate(loginUrl(), { replace: true });
});

function teardown() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error("sleap-rtc: cleanup failed", err);
    }
  }
  setLive(null);
}

function setLive(status) {
  live.hidden = status == null;
  live.className = status ? `live is-${status}` : "live";
  live.textContent = status === "live" ? "live" : status ? "reconnecting…" : "";
}

/** The breadcrumb: [{label, href}], the last one being this page. */
function setCrumbs(items) {
  const last = items.length - 1;
  const links = items.map((item, i) =>
    h(
      "li",
      {},
      i === last ? h("span", { "aria-current": "page" }, item.label) : h("a", { href: item.href }, item.label),
    ),
  );
  fill(crumbs, items.length ? h("ol", {}, links) : null);
}

function match(pathname) {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  for (const route of ROUTES) {
    const m = route.path.exec(path);
    if (!m) continue;
    try {
      return { route, params: m.slice(1).map(decodeURIComponent) };
    } catch {
      return null; // malformed %-escape
    }
  }
  return null;
}

async function render() {
  const previousPath = current?.path;
  const focusedId = document.activeElement?.id;
  teardown();
  say(flash, "");
  const controller = new AbortController();
  const cleanups = [];
  current = { controller, cleanups, path: location.pathname, url: location.pathname + location.search };
  const found = match(location.pathname);

  // What a page gets: where to draw, its URL, and hooks that end with it.
  const ctx = {
    main,
    params: found?.params ?? [],
    query: new URLSearchParams(location.search),
    signal: controller.signal,
    title: (...parts) => (document.title = [...parts, "sleap-rtc"].join(" · ")),
    crumbs: setCrumbs,
    navigate,
    setSession,
    /** Run fn when the page goes away (at once if it already has). */
    onCleanup(fn) {
      if (controller.signal.aborted) fn();
      else cleanups.push(fn);
    },
    interval(fn, ms) {
      const id = setInterval(fn, ms);
      ctx.onCleanup(() => clearInterval(id));
    },
    /** Follow an event stream for as long as the page is shown. */
    follow(path, eventId, handlers) {
      if (controller.signal.aborted) return;
      setLive("reconnecting");
      const close = api.follow(path, eventId, {
        ...handlers,
        onStatus: (s) => !controller.signal.aborted && setLive(s),
      });
      ctx.onCleanup(close);
    },
  };

  setCrumbs([]);
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    if (!found) {
      ctx.title("Not found");
      fill(main, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "/" }, "Back to your rooms")));
      return;
    }
    if (!found.route.public && !session) {
      const { data } = await api.get("/v1/auth/web/session", { signal: ctx.signal });
      setSession(data);
    }
    if (controller.signal.aborted) return;
    await found.route.page(ctx);
  } catch (err) {
    if (controller.signal.aborted || err.name === "AbortError" || err.status === 401) return;
    showError(err);
    return;
  }
  if (controller.signal.aborted) return;
  if (main.contains(document.activeElement) && document.activeElement !== main) return; // page chose
  // A query change (filters, paging) keeps focus where it was; a new page moves
  // it to the heading, so screen readers announce it.
  const again = focusedId && location.pathname === previousPath && document.getElementById(focusedId);
  if (again) again.focus();
  else if (previousPath !== undefined && previousPath !== location.pathname) {
    const heading = main.querySelector("h1");
    heading?.setAttribute("tabindex", "-1");
    heading?.focus();
  }
}

function showError(err) {
  const message = err.status === 404 ? NOT_FOUND : err.message || String(err);
  if (err.status === 404) document.title = "Not found · sleap-rtc";
  fill(main, h("h1", {}, err.status === 404 ? "Not found" : "Something went wrong"), alertBox(message));
}

// In-app links: same-origin <a> clicks become pushState navigations.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest?.("a[href]");
  if (!a || (a.target && a.target !== "_self") || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(v1|static)\//.test(url.pathname)) return;
  const here = url.pathname === location.pathname && url.search === location.search;
  if (here && url.hash) return; // a #fragment of this page: the browser scrolls to it
  event.preventDefault();
  if (!here) navigate(url.pathname + url.search + url.hash);
});

// Back/forward. A #fragment jump fires popstate too but is the same page.
window.addEventListener("popstate", () => {
  if (location.pathname + location.search !== current?.url) render();
});

logout.addEventListener("click", async () => {
  logout.disabled = true;
  try {
    await api.post("/v1/auth/web/logout", {});
    setSession(null);
    navigate("/login");
  } catch (err) {
    if (err.status !== 401) say(flash, `Could not log out: ${err.message}`);
  } finally {
    logout.disabled = false;
  }
});

// Relative times ("5 min ago") age on every page, with one timer for the app.
setInterval(() => refreshRelativeTimes(main), 10_000);

setSession(null);
render();
