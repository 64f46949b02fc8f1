// Configuration page: the services table updates by itself (GET /api/services every 2 s).
"use strict";

function uptime(s) {
  if (s === null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

// A field the service runs with a value set on its host (flag or BMS_* variable).
function inUse(u) {
  return `${u.path} = ${u.value} (${u.source}${u.host ? ` on ${u.host}` : ""})`;
}

function serviceRow(s, active) {
  const tr = document.createElement("tr");
  tr.dataset.service = s.service;
  const runs = s.kind === "config_ui"
    ? `publishes ${active === null ? "–" : active}`
    : (s.config_version === null ? "–" : `${s.config_version}${s.config_accepted ? "" : " (refused)"}`);
  const cells = [
    [s.service, ""], [s.kind, ""], [s.state, s.state === "online" ? "ok" : "error"],
    [uptime(s.uptime_s), ""], [String(s.restarts), ""],
    [runs, s.config_version === active && s.config_accepted ? "ok" : "warn"],
    [s.restart_required.join(", "), "small"],
    [s.in_use.map(inUse).join("; "), "small", "in-use"],
    [s.config_errors.join("; "), "small"],
  ];
  for (const [text, cls, testid] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (testid) td.dataset.testid = testid;
    tr.appendChild(td);
  }
  return tr;
}

async function refreshServices() {
  const r = await api("GET", "/api/services");
  const note = document.getElementById("services-updated");
  if (!r.ok) {
    note.textContent = `not updated: error ${r.status}`;
    return;
  }
  const active = r.data.active_version;
  document.getElementById("active-version").textContent = active === null ? "none" : String(active);
  const body = document.querySelector("#services-table tbody");
  body.replaceChildren(...r.data.services.map((s) => serviceRow(s, active)));
  note.textContent = `updated ${localTime(Date.now() / 1000)}; restarts counted since the web application started.`;
}

document.addEventListener("DOMContentLoaded", () => {
  if (!document.getElementById("services-table")) return;
  setInterval(refreshServices, 2000);
});
