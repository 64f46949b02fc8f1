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

// One time convention for people: the browser's local time with its offset ("+01:00").
function localTime(ts) {
  const d = new Date(ts * 1000);
  const pad = (n) => String(Math.abs(n)).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? "-" : "+";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ` +
    `${sign}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
}

// The active-alarm banner on every page: the most severe first, a link to the dashboard.
function showBanner(words) {
  const banner = document.getElementById("alarm-banner");
  if (!banner) return;
  if (!words.length) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  banner.hidden = false;
  banner.className = `alarm-banner ${words[0].level}`;
  const link = document.createElement("a");
  link.href = "/";
  const shown = words.slice(0, 3).map((w) => w.place ? `${w.title} at ${w.place}` : w.title);
  const more = words.length > 3 ? ` and ${words.length - 3} more` : "";
  link.textContent = `${words.length} active: ${shown.join("; ")}${more}`;
  banner.replaceChildren(link);
}

async function pollBanner() {
  const r = await api("GET", "/api/state");
  if (r.ok && r.data) showBanner(r.data.alarm_words || []);
}

function describeReply(r) {
  if (!r.ok) return `error ${r.status}: ${(r.data && r.data.detail) || "request failed"}`;
  const d = r.data;
  if (d.status === "accepted") return `${d.command}: accepted by the master`;
  if (d.status === "refused") return `${d.command}: refused by the master: ${d.reason}`;
  return `${d.command}: no reply from the master (${d.reason})`;
}

document.addEventListener("DOMContentLoaded", () => {
  // a phone shows the protection step's fields first: each level chart folds
  if (window.matchMedia("(max-width: 600px)").matches) {
    document.querySelectorAll("details.chart-fold").forEach((d) => d.removeAttribute("open"));
  }
  // the dashboard's live stream updates the banner itself; other pages ask every 5 s
  if (document.getElementById("alarm-banner") && !document.getElementById("alarms")) {
    pollBanner();
    setInterval(pollBanner, 5000);
  }
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
    el.textContent = localTime(parseFloat(el.dataset.ts));
  });
});
