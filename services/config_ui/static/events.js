// Event log: filters become query parameters of /api/events and of the CSV export.
"use strict";

const LABELS = ["Time", "Level", "Kind", "Code", "Text", "Source"];

function filterParams(form) {
  const params = new URLSearchParams();
  const data = new FormData(form);
  for (const [key, value] of data.entries()) {
    if (!value) continue;
    if (key === "since") params.set("since_ts", String(new Date(value).getTime() / 1000));
    else if (key === "until") params.set("until_ts", String(new Date(value).getTime() / 1000));
    else params.set(key, value);
  }
  return params;
}

async function loadEvents(form) {
  const params = filterParams(form);
  document.getElementById("csv-link").href = `/api/events.csv?${params}`;
  const status = document.getElementById("events-status");
  status.textContent = "loading…";
  const r = await api("GET", `/api/events?${params}`);
  const body = document.querySelector("#events-table tbody");
  if (!r.ok) {
    status.textContent = `error ${r.status}: ${(r.data && r.data.detail) || "request failed"}`;
    body.replaceChildren();
    return;
  }
  status.textContent = `${r.data.length} event(s), newest first`;
  body.replaceChildren(...r.data.map((e) => {
    const tr = document.createElement("tr");
    tr.className = e.level;
    // local time with its offset, as every page shows it (the CSV export stays ISO UTC)
    const cells = [localTime(e.ts), e.level, e.kind, e.code, e.text, e.source];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      td.dataset.label = LABELS[i];  // the card layout on narrow screens names each field
      tr.appendChild(td);
    });
    return tr;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("event-filter");
  form.addEventListener("submit", (ev) => { ev.preventDefault(); loadEvents(form); });
  loadEvents(form);
});
