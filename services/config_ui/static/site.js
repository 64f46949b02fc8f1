// Site page: the strings side by side, the site's values and limits, its joins and leaves.
// Polls /api/site once a second; an unknown value (null) shows as "–", never as 0.
"use strict";

const SITE_PERIOD_MS = 1000;
const STRING_LABELS = ["String", "Membership", "Reason", "SOC %", "Voltage V", "Current A",
  "Capacity Ah", "CVL V", "DVL V", "CCL A", "DCL A", "Contactors", "Worst"];
const EVENT_LABELS = ["Time", "Level", "Code", "String", "Text"];

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

function row(cells, labels, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    td.dataset.label = labels[i];
    tr.appendChild(td);
  });
  return tr;
}

function renderStrings(state) {
  const body = document.querySelector("#strings-table tbody");
  body.replaceChildren(...state.strings.map((s) => {
    const lim = s.limits;
    const tr = row([
      s.system, s.membership, s.reason || "", fmt(s.soc, 1), fmt(s.voltage_v, 2),
      fmt(s.current_a, 1), fmt(s.capacity_ah, 0),
      fmt(lim && lim.charge_voltage_v, 1), fmt(lim && lim.discharge_voltage_v, 1),
      fmt(lim && lim.charge_current_a, 1), fmt(lim && lim.discharge_current_a, 1),
      s.contactors || "–", s.worst_code ? `${s.worst_level}: ${s.worst_code}` : "–",
    ], STRING_LABELS, `membership-${s.membership}`);
    tr.dataset.system = s.system;
    tr.dataset.membership = s.membership;
    return tr;
  }));
}

function renderCodes(state) {
  const list = document.getElementById("site-codes");
  const items = [];
  for (const [level, codes] of [["fault", state.faults], ["alarm", state.alarms],
    ["warning", state.warnings]]) {
    for (const code of codes) {
      const li = document.createElement("li");
      li.className = level;
      li.textContent = `${level}: ${code}`;
      items.push(li);
    }
  }
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    items.push(li);
  }
  list.replaceChildren(...items);
}

function renderEvents(events) {
  const body = document.querySelector("#site-events tbody");
  body.replaceChildren(...events.map((e) => row(
    [localTime(e.ts), e.level, e.code, e.system || "", e.text], EVENT_LABELS, e.level)));
}

function renderSite(data) {
  const status = document.getElementById("site-status");
  const state = data.state;
  if (!state) {
    status.textContent = data.configured ? "no site state yet" : "waiting for the site configuration…";
    status.className = "stale";
  } else if (data.stale) {
    status.textContent = `stale: the site controller has been silent for ${fmt(data.state_age_s, 0)} s`;
    status.className = "stale";
  } else {
    status.textContent = `live · ${state.strings_joined} of ${state.strings_total} strings joined`;
    status.className = "live";
  }
  if (state) {
    setText("s-voltage", fmt(state.voltage_v, 2));
    setText("s-current", fmt(state.current_a, 1));
    setText("s-power", state.power_w === null ? "–" : fmt(state.power_w / 1000, 2));
    setText("s-soc", fmt(state.soc, 1));
    setText("s-soh", fmt(state.soh, 1));
    setText("s-joined", `${state.strings_joined} / ${state.strings_total}`);
    const lim = state.limits;
    setText("sl-cvl", fmt(lim.charge_voltage_v, 1) + " V");
    setText("sl-dvl", fmt(lim.discharge_voltage_v, 1) + " V");
    setText("sl-ccl", fmt(lim.charge_current_a, 1) + " A");
    setText("sl-dcl", fmt(lim.discharge_current_a, 1) + " A");
    setText("sl-cvl-reason", state.limit_words.charge_voltage || "");
    setText("sl-ccl-reason", state.limit_words.charge || "");
    setText("sl-dcl-reason", state.limit_words.discharge || "");
    renderStrings(state);
    renderCodes(state);
  }
  renderEvents(data.events);
}

async function pollSite() {
  const r = await api("GET", "/api/site");
  if (r.ok && r.data) renderSite(r.data);
  else setText("site-status", `error ${r.status}: ${(r.data && r.data.detail) || "request failed"}`);
}

document.addEventListener("DOMContentLoaded", () => {
  pollSite();
  setInterval(pollSite, SITE_PERIOD_MS);
});
