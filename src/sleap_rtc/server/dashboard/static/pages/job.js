// /rooms/{room}/jobs/{job}: one job, kept current by its event stream: state and
// progress ("job"), loss points ("points") and log lines ("log").

import * as api from "../api.js";
import { LossChart } from "../chart.js";
import {
  h, fill, table, relTime, stateText, num4, duration, toDate, localDate, localClock, isUnfinished,
  alertBox, statusLine, say, copyButton,
} from "../dom.js";
import { roomCrumbs, roomPath } from "./rooms.js";
import { elapsed, workerText } from "./jobs.js";

const LOG_CAP = 2000;

const heading = (name, text) => h("h2", { id: `${name}-title` }, text);
const section = (name, text, ...body) =>
  h("section", { "aria-labelledby": `${name}-title` }, heading(name, text), ...body);

/** "Model 1/2 (centroid) · epoch 7/50 · loss 0.0123 · val 0.015 · ETA 4m 10s". */
function trainText(p) {
  const parts = [];
  const name = p.model_name ? ` (${p.model_name})` : "";
  if (p.n_models > 1) parts.push(`Model ${p.model_index}/${p.n_models}${name}`);
  else if (p.model_name) parts.push(p.model_name);
  parts.push(`epoch ${p.epoch}/${p.total_epochs}`);
  if (p.loss != null) parts.push(`loss ${num4(p.loss)}`);
  if (p.val_loss != null) parts.push(`val ${num4(p.val_loss)}`);
  if (p.eta_s != null) parts.push(`ETA ${duration(p.eta_s)}`);
  return parts.join(" · ");
}

function trackText(p) {
  const parts = [`${p.n_processed}${p.n_total ? `/${p.n_total}` : ""} frames`];
  if (p.rate != null) parts.push(`${num4(p.rate)} frames/s`);
  if (p.eta_s != null) parts.push(`ETA ${duration(p.eta_s)}`);
  return parts.join(" · ");
}

function progressBar(p) {
  const bar = h("progress", { "aria-label": p.kind === "train" ? "Epochs of this model" : "Frames" });
  if (p.kind === "train" && p.total_epochs > 0) {
    bar.max = p.total_epochs;
    bar.value = p.epoch_done ? p.epoch : Math.max(0, p.epoch - 1);
  } else if (p.kind === "track" && p.n_total > 0) {
    bar.max = p.n_total;
    bar.value = p.n_processed;
  } // else indeterminate
  return bar;
}

/** "13:05:22 2024-05-01", local time. */
function stamp(at) {
  const d = toDate(at);
  if (!d) return "";
  const clock = h("time", { datetime: d.toISOString() }, localClock(d));
  return [clock, " ", h("span", { class: "muted" }, localDate(d))];
}

function metricsText(metrics) {
  return Object.entries(metrics ?? {}).map(([name, value]) => `${name}=${num4(value)}`).join(", ");
}

function bestText(r) {
  if (r.best_val_loss == null) return "";
  return `${num4(r.best_val_loss)}${r.best_epoch != null ? ` @ epoch ${r.best_epoch}` : ""}`;
}

function resultsTable(results) {
  return table(
    "Final metrics",
    ["Output", "Epochs", "Best val loss", "Metrics", "Frames"],
    results.map((r) =>
      h(
        "tr",
        {},
        h("th", { scope: "row", class: "mono" }, r.output),
        h("td", { class: "num" }, r.epochs ?? ""),
        h("td", { class: "num" }, bestText(r)),
        h("td", {}, metricsText(r.metrics)),
        h("td", { class: "num" }, r.frames ?? ""),
      ),
    ),
    { id: "job-results-table" },
  );
}

/** The log panel: appends numbered lines, marks gaps with "…", keeps the last LOG_CAP. */
class LogView {
  constructor(pre) {
    this.pre = pre;
    this.last = null; // n of the last line shown
  }

  append(lines) {
    const fresh = lines.filter((l) => this.last == null || l.n > this.last).sort((a, b) => a.n - b.n);
    if (!fresh.length) return;
    const pre = this.pre;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
    const add = [];
    for (const line of fresh) {
      if (this.last != null && line.n > this.last + 1) add.push(h("span", { class: "gap" }, "…\n"));
      add.push(document.createTextNode(`${line.text}\n`));
      this.last = line.n;
    }
    pre.append(...add.slice(-LOG_CAP));
    while (pre.childNodes.length > LOG_CAP) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}

export async function jobPage(ctx) {
  const [room, jobId] = ctx.params;
  const base = `/v1/rooms/${api.seg(room)}/jobs/${api.seg(jobId)}`;
  const short = jobId.slice(0, 8);
  ctx.title(`Job ${short}`, room);
  ctx.crumbs(roomCrumbs(room, { label: "Jobs", href: `${roomPath(room)}/jobs` }, { label: short }));

  let job = null;
  const points = new Map(); // "model:epoch" -> LossPoint
  let pending = null; // "stop" | "cancel" while its request runs
  let actionsKey = "";
  const shown = new Map(); // element -> what it shows, as JSON

  /** Rebuild el only when `value` changed: progress events come often. */
  function refill(el, value, build) {
    const key = JSON.stringify(value);
    if (shown.get(el) === key) return;
    shown.set(el, key);
    build();
  }

  // The page's parts; update() refills the ones that follow the job record.
  const badge = h("span", { id: "job-state" });
  const facts = h("dl", { class: "facts", id: "job-facts" });
  const took = h("span", { id: "job-took" });
  const actions = h("div", { class: "actions", id: "job-actions" });
  const actionStatus = statusLine();
  const actionError = alertBox();
  const progress = h("section", { id: "job-progress", "aria-labelledby": "progress-title" });
  const chartBox = h("div", { id: "loss-chart", class: "loss-chart" });
  const chartSection = section("loss", "Loss", chartBox);
  const timeline = h("ol", { id: "job-timeline", class: "timeline" });
  const results = h("section", { id: "job-results", "aria-labelledby": "results-title" });
  const outputs = h("section", { id: "job-outputs", "aria-labelledby": "outputs-title" });
  const command = h("code", { id: "job-command" });
  const log = h("pre", { id: "job-log", class: "log", tabindex: "0", "aria-label": "Log tail" });
  const logView = new LogView(log);
  const chart = new LossChart(chartBox);
  ctx.onCleanup(() => chart.destroy());

  const nModels = () => (job?.progress?.kind === "train" ? job.progress.n_models : 1);
  const redrawChart = () => chart.set([...points.values()], nModels());
  const mergePoints = (list) => {
    for (const p of list) points.set(`${p.model}:${p.epoch}`, p);
    redrawChart();
  };

  function renderTook() {
    const s = elapsed(job);
    took.textContent = s == null ? "—" : duration(s);
  }

  function renderActions() {
    const open = job.can_control && isUnfinished(job);
    const canStop = open && job.kind === "train" && job.state === "RUNNING";
    const key = `${open}/${canStop}`;
    if (key !== actionsKey) {
      // Rebuilt only when the set changes, so a focused button keeps focus.
      actionsKey = key;
      const button = (action, label, cls) =>
        h("button", { type: "button", id: `job-${action}`, class: cls, onclick: () => act(action) }, label);
      const cancel = open ? button("cancel", "Cancel", "danger") : null;
      fill(actions, canStop ? button("stop", "Stop early") : null, cancel);
    }
    for (const b of actions.querySelectorAll("button")) b.disabled = pending != null;
  }

  async function act(action) {
    const question = action === "stop"
      ? `Stop job ${job.job_id} early? It ends after this epoch and keeps the model.`
      : `Cancel job ${job.job_id}?`;
    if (!confirm(question)) return;
    pending = action;
    renderActions();
    say(actionStatus, "");
    say(actionError, "");
    try {
      const { data } = await api.post(`${base}/${action}`, {});
      say(actionStatus, data?.message ?? (action === "stop" ? "Stopping…" : "Cancelling…"));
    } catch (err) {
      say(actionError, err.message);
    } finally {
      pending = null;
      if (job) renderActions();
    }
  }

  function update() {
    badge.className = `badge state-${job.state}`;
    badge.textContent = stateText(job);
    const running = isUnfinished(job);
    const worker = workerText(job);
    const known = [job.owner, worker, job.created_at, running, job.summary, job.reason, job.exit_code];
    refill(facts, known, () => {
      const fact = (term, ...value) => [h("dt", {}, term), h("dd", {}, ...value)];
      fill(
        facts,
        fact("Owner", job.owner ?? "—"),
        fact("Worker", h("a", { href: `${roomPath(room)}/workers` }, worker)),
        fact("Submitted", stamp(job.created_at), " (", relTime(job.created_at), ")"),
        fact(running ? "Running for" : "Took", took),
        job.summary ? fact("Summary", job.summary) : null,
        job.reason ? fact("Reason", h("span", { id: "job-reason" }, job.reason)) : null,
        job.exit_code != null ? fact("Exit code", job.exit_code) : null,
      );
    });
    renderTook();
    renderActions();

    const p = job.progress;
    progress.hidden = !(p && isUnfinished(job));
    if (!progress.hidden) {
      fill(
        progress,
        heading("progress", "Progress"),
        h("p", { id: "job-progress-text" }, p.kind === "train" ? trainText(p) : trackText(p)),
        progressBar(p),
      );
    }
    chartSection.hidden = job.kind !== "train" && points.size === 0;

    const history = job.history ?? [];
    refill(timeline, history, () => {
      const badge = (state) => h("span", { class: `badge state-${state}` }, state);
      const item = (c) => h("li", {}, stamp(c.at), " ", badge(c.state), c.reason ? ` ${c.reason}` : "");
      fill(timeline, history.map(item));
    });
    const done = job.results ?? [];
    results.hidden = !done.length;
    refill(results, done, () =>
      fill(results, heading("results", "Final metrics"), done.length ? resultsTable(done) : null));
    const paths = job.outputs ?? [];
    outputs.hidden = !paths.length;
    const pathList = () => h("ul", { class: "plain mono" }, paths.map((o) => h("li", {}, o)));
    refill(outputs, paths, () => fill(outputs, heading("outputs", "Outputs"), pathList()));
    if (command.textContent !== (job.command ?? "")) command.textContent = job.command ?? "";
  }

  function setJob(view) {
    const { points: _p, log_tail: _l, ...record } = view;
    job = record;
    update();
  }

  /** Show a JobDetail snapshot: the record, all its points, the log lines not yet shown. */
  function show(detail) {
    setJob(detail);
    points.clear();
    mergePoints(detail.points ?? []);
    logView.append(detail.log_tail ?? []);
  }

  const first = await api.get(base, { signal: ctx.signal });
  job = first.data;
  fill(
    ctx.main,
    h(
      "div",
      { class: "job-head" },
      h("h1", {}, "Job ", h("span", { class: "mono" }, job.job_id)),
      h("span", { class: "kind" }, job.kind),
      badge,
    ),
    facts,
    actions,
    actionStatus,
    actionError,
    progress,
    chartSection,
    section("timeline", "Timeline", timeline),
    results,
    outputs,
    section(
      "command",
      "Command",
      h("div", { class: "command" }, h("pre", {}, command), copyButton(() => command.textContent)),
    ),
    section("log", "Log", log),
  );
  show(first.data);
  log.scrollTop = log.scrollHeight;
  ctx.interval(() => isUnfinished(job) && renderTook(), 10_000);

  ctx.follow(`${base}/events`, first.eventId, {
    on: {
      job(view) {
        if (view.updated_at < job.updated_at) return;
        const models = nModels();
        setJob(view);
        if (points.size && nModels() !== models) redrawChart(); // charts get "Model N" titles
      },
      points: (data) => mergePoints(data.points ?? []),
      log: (data) => logView.append(data.lines ?? []),
    },
    async resync() {
      const { data, eventId } = await api.get(base, { signal: ctx.signal });
      show(data);
      return eventId;
    },
  });
}
