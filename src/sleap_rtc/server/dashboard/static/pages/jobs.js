// /rooms/{room}/jobs: the room's job index, with filters and paging kept in the
// query string, and rows kept current by the room's events.

import * as api from "../api.js";
import {
  h, fill, table, relTime, stateBadge, num4, duration, isUnfinished, alertBox, say, JOB_STATES,
} from "../dom.js";
import { roomCrumbs, roomPath } from "./rooms.js";

const DEFAULT_LIMIT = 50;
const COLUMNS = ["Job", "Kind", "Owner", "Worker", "State", "Submitted", "Took", "Progress", "Best val loss"];
const REFETCH_MS = 1000;

const jobPath = (room, job) => `${roomPath(room)}/jobs/${api.seg(job)}`;

/** Seconds it ran: to its end, or so far while it runs. */
export function elapsed(job) {
  if (job.elapsed_s != null) return job.elapsed_s;
  const started = job.history?.find((c) => c.state === "RUNNING")?.at;
  return job.state === "RUNNING" && started != null ? Date.now() / 1000 - started : null;
}

/** "epoch 3/10" (with the model when there are several), "120/400 frames", or what it did. */
function progressText(job) {
  if (!isUnfinished(job)) {
    const sum = (kind, field) =>
      (job.results ?? []).filter((r) => r.kind === kind).reduce((n, r) => n + (r[field] ?? 0), 0);
    const epochs = sum("train", "epochs");
    if (epochs) return `${epochs} epoch${epochs === 1 ? "" : "s"}`;
    const frames = sum("track", "frames");
    if (frames) return `${frames} frames`;
  }
  const p = job.progress;
  if (!p) return "";
  if (p.kind === "track") return `${p.n_processed}${p.n_total ? `/${p.n_total}` : ""} frames`;
  const model = p.n_models > 1 ? `model ${p.model_index}/${p.n_models} · ` : "";
  return `${model}epoch ${p.epoch}/${p.total_epochs}`;
}

/** The best validation loss, or the latest one while it trains. */
function bestValLoss(job) {
  return job.best_val_loss ?? (job.progress?.kind === "train" ? job.progress.val_loss : null) ?? null;
}

export function workerText(job) {
  const offline = job.worker_status === "offline" && isUnfinished(job);
  return `${job.worker_name ?? job.worker_id ?? "—"}${offline ? " (offline)" : ""}`;
}

function row(room, job) {
  return h(
    "tr",
    { "data-job-id": job.job_id, "data-state": job.state },
    h(
      "th",
      { scope: "row" },
      h("a", { href: jobPath(room, job.job_id), title: job.job_id, class: "mono" }, job.job_id.slice(0, 8)),
    ),
    h("td", {}, job.kind),
    h("td", {}, job.owner ?? "—"),
    h("td", {}, workerText(job)),
    h("td", { class: "state" }, stateBadge(job)),
    h("td", {}, relTime(job.created_at)),
    h("td", { class: "num" }, duration(elapsed(job))),
    h("td", {}, progressText(job)),
    h("td", { class: "num" }, num4(bestValLoss(job))),
  );
}

/** The filters and page the URL asks for. */
function readQuery(query) {
  const int = (name, fallback, max) => {
    const n = Number.parseInt(query.get(name) ?? "", 10);
    return Number.isFinite(n) && n >= 0 ? Math.min(n, max) : fallback;
  };
  const kind = query.get("kind");
  return {
    states: query.getAll("state").filter((s) => JOB_STATES.includes(s)),
    owner: query.get("owner")?.trim() || "",
    worker: query.get("worker")?.trim() || "",
    kind: kind === "train" || kind === "track" ? kind : "",
    limit: Math.max(1, int("limit", DEFAULT_LIMIT, 500)),
    offset: int("offset", 0, Number.MAX_SAFE_INTEGER),
  };
}

function toQuery(f, { paging = true } = {}) {
  const q = new URLSearchParams();
  for (const s of f.states) q.append("state", s);
  if (f.owner) q.set("owner", f.owner);
  if (f.worker) q.set("worker", f.worker);
  if (f.kind) q.set("kind", f.kind);
  if (paging && f.limit !== DEFAULT_LIMIT) q.set("limit", String(f.limit));
  if (paging && f.offset) q.set("offset", String(f.offset));
  return q;
}

function matches(f, job) {
  return (
    (!f.states.length || f.states.includes(job.state)) &&
    (!f.owner || job.owner === f.owner) &&
    (!f.worker || job.worker_id === f.worker || job.worker_name === f.worker) &&
    (!f.kind || job.kind === f.kind)
  );
}

function filterForm(f, apply) {
  const field = (name, label, control) =>
    h("div", { class: "field" }, h("label", { for: `filter-${name}` }, label), control);
  const text = (name) =>
    h("input", { id: `filter-${name}`, name, value: f[name], autocomplete: "off" });
  const kinds = [["", "any"], ["train", "train"], ["track", "track"]];
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h(
      "fieldset",
      {},
      h("legend", {}, "State"),
      JOB_STATES.map((s) =>
        h(
          "label",
          { class: "check" },
          h("input", { type: "checkbox", name: "state", value: s, checked: f.states.includes(s) }),
          s,
        ),
      ),
    ),
    field("owner", "User", text("owner")),
    field("worker", "Worker", text("worker")),
    field(
      "kind",
      "Kind",
      h(
        "select",
        { id: "filter-kind", name: "kind" },
        kinds.map(([value, label]) => h("option", { value, selected: f.kind === value }, label)),
      ),
    ),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", id: "filter-apply" }, "Apply filters"),
      h("button", { type: "reset", id: "filter-clear", class: "secondary" }, "Clear filters"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    apply({
      ...f,
      states: data.getAll("state"),
      owner: data.get("owner").trim(),
      worker: data.get("worker").trim(),
      kind: data.get("kind"),
      offset: 0,
    });
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    apply({ ...f, states: [], owner: "", worker: "", kind: "", offset: 0 });
  });
  return form;
}

export async function jobsPage(ctx) {
  const [room] = ctx.params;
  const base = `/v1/rooms/${api.seg(room)}`;
  const f = readQuery(ctx.query);
  ctx.title("Jobs", room);
  ctx.crumbs(roomCrumbs(room, { label: "Jobs" }));

  const go = (next) => {
    const q = toQuery(next).toString();
    ctx.navigate(`${roomPath(room)}/jobs${q ? `?${q}` : ""}`);
  };
  const jobs = new Map(); // job_id -> JobView, newest first
  let total = 0;
  const list = h("div", { id: "jobs" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const error = alertBox();
  const filtered = toQuery(f, { paging: false }).toString() !== "";

  function renderList() {
    const none = total > 0 ? "No jobs on this page."
      : filtered ? "No jobs match these filters." : "No jobs in this room yet.";
    fill(
      list,
      jobs.size
        ? table("Jobs", COLUMNS, [...jobs.values()].map((j) => row(room, j)))
        : h("p", { class: "muted" }, none),
    );
    const page = (id, label, offset, disabled) =>
      h("button", { type: "button", id, class: "secondary", disabled, onclick: () => go({ ...f, offset }) },
        label);
    const range = total ? `${Math.min(f.offset + 1, total)}–${Math.min(f.offset + jobs.size, total)}` : "0";
    fill(
      pager,
      page("jobs-prev", "Previous", Math.max(0, f.offset - f.limit), f.offset === 0),
      h("span", { id: "jobs-range" }, `${range} of ${total}`),
      page("jobs-next", "Next", f.offset + f.limit, f.offset + f.limit >= total),
    );
  }

  let loads = 0;
  async function load() {
    const q = toQuery(f);
    q.set("limit", String(f.limit));
    const seq = ++loads;
    const { data, eventId } = await api.get(`${base}/jobs?${q}`, { signal: ctx.signal });
    if (seq !== loads) return eventId; // a newer fetch is on its way
    const seen = new Map(jobs);
    jobs.clear();
    for (const job of data.jobs) {
      // An event may have brought a newer record than this snapshot.
      const known = seen.get(job.job_id);
      jobs.set(job.job_id, known && known.updated_at > job.updated_at ? known : job);
    }
    total = data.total;
    renderList();
    return eventId;
  }

  // A new job on the first page: fetch the page again, at most once a second.
  let refetch = null;
  ctx.onCleanup(() => clearTimeout(refetch));
  const refetchSoon = () => {
    refetch ??= setTimeout(() => {
      refetch = null; // a job that comes while this fetch runs asks for another
      load().then(
        () => say(error, ""),
        (err) => err.name !== "AbortError" && say(error, `Could not refresh the jobs: ${err.message}`),
      );
    }, REFETCH_MS);
  };

  const eventId = await load();
  fill(
    ctx.main,
    h("h1", {}, "Jobs"),
    h(
      "p",
      {},
      "In room ",
      h("a", { href: roomPath(room) }, room),
      " · ",
      h("a", { href: `${roomPath(room)}/workers` }, "Workers"),
    ),
    filterForm(f, go),
    error,
    list,
    pager,
  );
  ctx.follow(`${base}/events`, eventId, {
    on: {
      job(job) {
        const known = jobs.get(job.job_id);
        if (known) {
          if (known.updated_at > job.updated_at) return;
          jobs.set(job.job_id, job);
          const shown = list.querySelector(`tr[data-job-id="${CSS.escape(job.job_id)}"]`);
          shown?.replaceWith(row(room, job));
        } else if (f.offset === 0 && matches(f, job)) {
          refetchSoon();
        }
      },
    },
    resync: load,
  });
}
