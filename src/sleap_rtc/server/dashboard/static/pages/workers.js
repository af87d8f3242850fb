// /rooms/{room}/workers: the room's workers, kept current by the room's events.

import * as api from "../api.js";
import { h, fill, table, relTime, statusBadge } from "../dom.js";
import { roomCrumbs, roomPath } from "./rooms.js";

const gib = (mb) => (mb / 1024).toFixed(1);

/** "0: NVIDIA A40 — 30.1 / 45.0 GiB free, 37 %", leaving out what is unknown. */
function gpuText(gpu) {
  let text = `${gpu.index}: ${gpu.name}`;
  if (gpu.memory_total_mb != null) {
    text += gpu.memory_free_mb != null
      ? ` — ${gib(gpu.memory_free_mb)} / ${gib(gpu.memory_total_mb)} GiB free`
      : ` — ${gib(gpu.memory_total_mb)} GiB`;
  }
  if (gpu.utilization_pct != null) text += `, ${gpu.utilization_pct} %`;
  return text;
}

function gpus(worker) {
  if (!worker.gpus?.length) return worker.accelerator === "mps" ? "Apple GPU (MPS)" : "CPU only";
  return list(worker.gpus.map(gpuText), "plain");
}

const list = (items, cls) => h("ul", { class: cls }, items.map((item) => h("li", {}, item)));

function row(w) {
  return h(
    "tr",
    { "data-worker-id": w.id, "data-status": w.status },
    h(
      "th",
      { scope: "row" },
      h("span", { class: "name" }, w.name),
      h("small", { class: "id" }, w.id),
      w.hostname && w.hostname !== w.name ? h("small", {}, w.hostname) : null,
    ),
    h("td", { class: "status" }, statusBadge(w.status)),
    h("td", {}, gpus(w)),
    h("td", {}, w.sleap_nn_version ?? "—"),
    h("td", {}, w.backends?.length ? w.backends.join(", ") : "—"),
    h("td", {}, w.mounts?.length ? list(w.mounts, "plain mono") : "—"),
    h("td", { class: "num" }, `${w.running_jobs} / ${w.max_concurrent_jobs}`),
    h("td", {}, relTime(w.last_seen)),
  );
}

export async function workersPage(ctx) {
  const [room] = ctx.params;
  const base = `/v1/rooms/${api.seg(room)}`;
  ctx.title("Workers", room);
  ctx.crumbs(roomCrumbs(room, { label: "Workers" }));

  const workers = new Map(); // id -> WorkerView, in the server's order
  const body = h("div", { id: "workers" });
  const render = () =>
    fill(
      body,
      workers.size
        ? table(
            "Workers",
            ["Worker", "Status", "GPUs", "sleap-nn", "Backends", "Mounts", "Jobs", "Last seen"],
            [...workers.values()].map(row),
          )
        : h("p", { class: "muted" }, "No worker has joined this room yet."),
    );

  async function load() {
    const { data, eventId } = await api.get(`${base}/workers`, { signal: ctx.signal });
    workers.clear();
    for (const w of data) workers.set(w.id, w);
    render();
    return eventId;
  }

  const eventId = await load();
  fill(
    ctx.main,
    h("h1", {}, "Workers"),
    h(
      "p",
      {},
      "In room ",
      h("a", { href: roomPath(room) }, room),
      " · ",
      h("a", { href: `${roomPath(room)}/jobs` }, "Jobs"),
    ),
    body,
  );
  ctx.follow(`${base}/events`, eventId, {
    on: {
      worker(w) {
        const shown = workers.has(w.id) && body.querySelector(`tr[data-worker-id="${CSS.escape(w.id)}"]`);
        workers.set(w.id, w);
        if (shown) shown.replaceWith(row(w));
        else render();
      },
    },
    resync: load,
  });
}
