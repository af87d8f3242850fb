// "/" (your rooms) and "/rooms/{room}" (one room: members, invites).

import * as api from "../api.js";
import {
  h, fill, table, relTime, toDate, localDate, localClock, alertBox, say, copyButton,
} from "../dom.js";

export const roomPath = (room) => `/rooms/${api.seg(room)}`;

export function roomCrumbs(room, ...rest) {
  return [{ label: room, href: roomPath(room) }, ...rest];
}

const WEEK_S = 7 * 24 * 3600;

function when(iso) {
  const d = toDate(iso);
  return d ? `${localDate(d)} ${localClock(d)}` : "never";
}

export async function roomsPage(ctx) {
  ctx.title("Rooms");
  const { data: rooms } = await api.get("/v1/rooms", { signal: ctx.signal });
  const rows = rooms.map((r) =>
    h(
      "tr",
      { "data-room": r.name },
      h("th", { scope: "row" }, h("a", { href: roomPath(r.name) }, r.name)),
      h("td", {}, r.role),
      h("td", { class: "num" }, r.members),
      h("td", { class: "num" }, r.workers_online),
    ),
  );
  fill(
    ctx.main,
    h("h1", {}, "Your rooms"),
    rooms.length
      ? table("Your rooms", ["Room", "Your role", "Members", "Workers online"], rows, { id: "rooms" })
      : h(
          "p",
          {},
          "You are not a member of any room yet. Ask a room's owner for an invite, then run ",
          h("code", {}, "sleap-rtc rooms join CODE"),
          ".",
        ),
  );
}

export async function roomPage(ctx) {
  const [room] = ctx.params;
  ctx.title(room);
  ctx.crumbs(roomCrumbs(room));
  const { data: info } = await api.get(`/v1/rooms/${api.seg(room)}`, { signal: ctx.signal });

  const facts = [
    ["Your role", info.role],
    ["Owner", info.owner ?? "—"],
    ["Members", info.members],
    ["Workers", `${info.workers_online} online of ${info.workers_known} known`],
    ["Keys active", info.keys_active],
    ["Created", when(info.created_at)],
    ["Expires", when(info.expires_at)],
  ];
  const members = info.member_list.map((m) =>
    h(
      "tr",
      { "data-member": m.username },
      h("th", { scope: "row" }, m.username),
      h("td", {}, m.role),
      h("td", {}, relTime(m.joined_at)),
    ),
  );

  fill(
    ctx.main,
    h("h1", {}, info.name),
    h(
      "nav",
      { class: "room-links", "aria-label": "Room" },
      h("a", { href: `${roomPath(room)}/workers` }, "Workers"),
      h("a", { href: `${roomPath(room)}/jobs` }, "Jobs"),
    ),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h(
      "section",
      { "aria-labelledby": "members-title" },
      h("h2", { id: "members-title" }, "Members"),
      table("Members", ["User", "Role", "Joined"], members, { id: "members" }),
    ),
    info.role === "owner" ? inviteSection(room) : null,
  );
}

function inviteSection(room) {
  const button = h("button", { type: "button", id: "create-invite" }, "Create invite");
  const error = alertBox();
  const result = h("div", { id: "invite", "aria-live": "polite" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    say(error, "");
    try {
      const { data } = await api.post(`/v1/rooms/${api.seg(room)}/invites`, {
        expires_in_s: WEEK_S,
        max_uses: 1,
      });
      const command = `sleap-rtc rooms join ${data.code}`;
      const uses = data.max_uses == null ? "" : ` · ${data.max_uses} use${data.max_uses === 1 ? "" : "s"}`;
      fill(
        result,
        h(
          "p",
          {},
          "Invite code ",
          h("code", { id: "invite-code" }, data.code),
          ` · valid until ${when(data.expires_at)}${uses}`,
        ),
        h("p", {}, "The new member runs:"),
        h(
          "div",
          { class: "command" },
          h("pre", {}, h("code", { id: "invite-command" }, command)),
          copyButton(() => command),
        ),
      );
    } catch (err) {
      say(error, err.message);
    } finally {
      button.disabled = false;
    }
  });
  return h(
    "section",
    { "aria-labelledby": "invite-title" },
    h("h2", { id: "invite-title" }, "Invite someone"),
    h("p", { class: "muted" }, "An invite is good for one person for 7 days."),
    button,
    error,
    result,
  );
}
