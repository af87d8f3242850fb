// /login: username and password; then on to ?next= (a same-origin path) or /.

import * as api from "../api.js";
import { h, fill, alertBox, say } from "../dom.js";

/** `next` if it is a path on this site (not "//host" or "/\host"), else "/". */
function safeNext(next) {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
  try {
    const url = new URL(next, location.origin);
    if (url.origin !== location.origin || url.pathname === "/login") return "/";
    return url.pathname + url.search + url.hash;
  } catch {
    return "/";
  }
}

export async function loginPage(ctx) {
  ctx.title("Log in");
  const username = h("input", {
    id: "login-username",
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit" }, "Log in");
  const error = alertBox();

  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to sleap-rtc"),
    h("div", { class: "field" }, h("label", { for: username.id }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: password.id }, "Password"), password),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(error, "");
    submit.disabled = true;
    try {
      const { data } = await api.post(
        "/v1/auth/web/login",
        { username: username.value.trim(), password: password.value },
        { authRedirect: false },
      );
      ctx.setSession(data);
      ctx.navigate(safeNext(ctx.query.get("next")), { replace: true });
    } catch (err) {
      say(error, err.message);
      password.select();
    } finally {
      submit.disabled = false;
    }
  });

  fill(ctx.main, form);
  username.focus();
}
