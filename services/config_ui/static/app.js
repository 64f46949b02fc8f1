// Shared by every page: CSRF header on API writes, confirmations, command buttons, times.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function api(method, url, body) {
  const init = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

function describeReply(r) {
  if (!r.ok) return `error ${r.status}: ${(r.data && r.data.detail) || "request failed"}`;
  const d = r.data;
  if (d.status === "accepted") return `${d.command}: accepted by the master`;
  if (d.status === "refused") return `${d.command}: refused by the master: ${d.reason}`;
  return `${d.command}: no reply from the master (${d.reason})`;
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      const submitter = ev.submitter;
      if (submitter && submitter.value === "prev") return;
      if (form.id === "wizard-form" && submitter && submitter.value !== "apply") return;
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });
  document.querySelectorAll("button[data-command]").forEach((button) => {
    button.addEventListener("click", async () => {
      const out = document.getElementById("command-reply");
      const args = JSON.parse(button.dataset.args);
      if (button.dataset.reason) {
        // the dialog is the confirmation; an empty reason sends nothing
        const reason = window.prompt(button.dataset.reason, "");
        if (reason === null) return;
        if (!reason.trim()) {
          out.textContent = `${button.textContent}: not sent, a reason is required`;
          out.className = "reply error";
          return;
        }
        args.reason = reason.trim();
      } else if (!window.confirm(button.dataset.confirm)) return;
      out.textContent = `${button.textContent}: sent, waiting for the master…`;
      out.className = "reply";
      const r = await api("POST", `/api/commands/${button.dataset.command}`, args);
      out.textContent = describeReply(r);
      out.className = "reply " + (r.ok && r.data.status === "accepted" ? "ok" : "error");
    });
  });
  document.querySelectorAll("[data-ts]").forEach((el) => {
    el.textContent = new Date(parseFloat(el.dataset.ts) * 1000).toISOString().replace("T", " ").slice(0, 19);
  });
});
