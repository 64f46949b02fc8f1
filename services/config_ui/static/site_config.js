// Site configuration page: the form of the newest version, problems shown at their field,
// the versions with rollback, and the site controller's acknowledgement.
"use strict";

const ACK_PERIOD_MS = 2000;
const form = () => document.getElementById("site-form");
let current = null;  // the newest version's number (null before any)

function stringRow(s, i) {
  const tr = document.createElement("tr");
  tr.dataset.index = String(i);
  const cell = (child) => { const td = document.createElement("td"); td.appendChild(child); tr.appendChild(td); return td; };
  const num = document.createElement("span");
  num.textContent = String(i + 1);
  cell(num);
  const mk = (kind, path, value, label) => {
    const input = document.createElement("input");
    input.type = kind;
    input.dataset.path = path;
    input.setAttribute("aria-label", `string ${i + 1}: ${label}`);
    if (kind === "checkbox") input.checked = value; else input.value = value;
    if (kind === "number") input.step = "any";
    return input;
  };
  const fields = [
    mk("text", `strings.${i}.system`, s.system || "", "system id"),
    mk("number", `strings.${i}.resistance_mohm`, s.resistance_mohm ?? "", "resistance in mΩ"),
    mk("checkbox", `strings.${i}.in_service`, s.in_service !== false, "in service"),
  ];
  for (const input of fields) {
    const td = cell(input);
    const err = document.createElement("p");
    err.className = "field-error error";
    err.dataset.errorFor = input.dataset.path;
    td.appendChild(err);
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => { const rows = readStrings(); rows.splice(i, 1); renderStrings(rows); });
  cell(remove);
  return tr;
}

function renderStrings(strings) {
  document.querySelector("#sc-strings tbody").replaceChildren(...strings.map(stringRow));
}

function readStrings() {
  return [...document.querySelectorAll("#sc-strings tbody tr")].map((tr) => {
    const get = (f) => tr.querySelector(`[data-path$=".${f}"]`);
    const r = get("resistance_mohm").value.trim();
    return { system: get("system").value.trim(), resistance_mohm: r === "" ? null : Number(r),
      in_service: get("in_service").checked };
  });
}

function readForm() {
  const f = form();
  const num = (name) => { const v = f.elements[name].value.trim(); return v === "" ? undefined : Number(v); };
  const config = { site: f.elements.site.value.trim(), name: f.elements.name.value, strings: readStrings() };
  for (const name of ["join_window_v", "current_sharing_factor", "stale_after_s"]) {
    const v = num(name);
    if (v !== undefined) config[name] = v;
  }
  return config;
}

function fillForm(config) {
  const f = form();
  f.elements.site.value = config.site;
  f.elements.name.value = config.name || "";
  f.elements.join_window_v.value = config.join_window_v;
  f.elements.current_sharing_factor.value = config.current_sharing_factor;
  f.elements.stale_after_s.value = config.stale_after_s;
  renderStrings(config.strings);
}

function showErrors(errors) {
  for (const el of document.querySelectorAll("[data-error-for]")) {
    const messages = errors[el.dataset.errorFor] || [];
    el.textContent = messages.join(" ");
    const input = document.querySelector(`[data-path="${el.dataset.errorFor}"]`);
    if (input) input.classList.toggle("invalid", messages.length > 0);
  }
}

function showAcks(acks) {
  const el = document.getElementById("sc-ack");
  if (!acks.length) { el.textContent = "no acknowledgement yet"; el.className = "small"; return; }
  el.replaceChildren(...acks.map((a) => {
    const span = document.createElement("span");
    const what = a.accepted ? "runs" : "refused";
    span.textContent = `${a.service} ${what} version ${a.config_version}` +
      (a.current ? " (the newest)" : " (not the newest yet)") +
      (a.errors.length ? `: ${a.errors.join("; ")}` : "");
    span.className = a.accepted && a.current ? "ok" : "warn";
    span.dataset.testid = "ack";
    return span;
  }));
}

async function loadVersions() {
  const r = await api("GET", "/api/site/config/versions");
  if (!r.ok) return;
  const admin = form().dataset.admin === "true";
  document.querySelector("#sc-versions tbody").replaceChildren(...r.data.versions.map((v) => {
    const tr = document.createElement("tr");
    for (const text of [v.version, localTime(v.created_ts), v.user, v.source, v.summary, v.comment]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (admin && v.version !== current) {
      const b = document.createElement("button");
      b.textContent = "Roll back";
      b.addEventListener("click", async () => {
        const back = await api("POST", `/api/site/config/rollback/${v.version}`, {});
        document.getElementById("sc-result").textContent =
          back.ok ? `version ${back.data.version} applied` : (back.data && back.data.detail) || "failed";
        await load();
      });
      td.appendChild(b);
    }
    tr.appendChild(td);
    return tr;
  }));
}

async function load() {
  const r = await api("GET", "/api/site/config");
  if (!r.ok) return;
  current = r.data.version ? r.data.version.version : null;
  if (r.data.version) fillForm(r.data.version.config);
  else if (!document.querySelector("#sc-strings tbody tr")) renderStrings([{ system: "" }]);
  showAcks(r.data.acks);
  await loadVersions();
}

async function pollAcks() {
  const r = await api("GET", "/api/site/config");
  if (r.ok) showAcks(r.data.acks);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sc-add").addEventListener("click", () => {
    const rows = readStrings();
    rows.push({ system: "", resistance_mohm: null, in_service: true });
    renderStrings(rows);
  });
  form().addEventListener("submit", async (event) => {
    event.preventDefault();
    const comment = document.getElementById("sc-comment").value;
    const r = await api("POST", "/api/site/config", { config: readForm(), comment });
    const result = document.getElementById("sc-result");
    if (r.status === 422) {
      showErrors(r.data.errors || {});
      result.textContent = "not applied: see the fields marked";
      result.className = "error";
      return;
    }
    showErrors({});
    result.textContent = r.ok ? `version ${r.data.version} applied` : (r.data && r.data.detail) || `failed (${r.status})`;
    result.className = r.ok ? "ok" : "error";
    if (r.ok) await load();
  });
  load();
  setInterval(pollAcks, ACK_PERIOD_MS);
});
