// Site page, operators: hold a string out of the site's bus or let it join again
// (POST /api/site/strings/{system}/{join|out}, the site command site_string), and disconnect
// the whole site or connect it (POST /api/site/operation/{disconnect|connect}, site_operation).
"use strict";

async function fillStrings() {
  const r = await api("GET", "/api/site");
  if (!r.ok || !r.data) return;
  const operation = r.data.state ? r.data.state.operation : null;
  document.getElementById("op-operation").textContent =
    operation === "disconnect" ? "disconnected" : operation === "connect" ? "connected" : "–";
  const select = document.getElementById("op-string");
  const chosen = select.value;
  const names = r.data.config_strings || [];
  if ([...select.options].map((o) => o.value).join() === names.join()) return;
  select.replaceChildren(...names.map((name) => {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    return option;
  }));
  if (names.includes(chosen)) select.value = chosen;
}

document.addEventListener("DOMContentLoaded", () => {
  fillStrings();
  setInterval(fillStrings, 5000);
  for (const button of document.querySelectorAll("#site-operation button[data-operation]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.operation;
      if (action === "disconnect" && !window.confirm("Disconnect every string of the site?")) return;
      const r = await api("POST", `/api/site/operation/${action}`);
      const out = document.getElementById("op-operation-result");
      out.textContent = r.ok
        ? `site ${action === "disconnect" ? "disconnected" : "connected"}`
        : `${(r.data && r.data.detail) || `failed (${r.status})`}`;
      out.className = r.ok ? "ok" : "error";
      fillStrings();
    });
  }
  for (const button of document.querySelectorAll("#site-operator button[data-action]")) {
    button.addEventListener("click", async () => {
      const system = document.getElementById("op-string").value;
      if (!system) return;
      const r = await api("POST", `/api/site/strings/${encodeURIComponent(system)}/${button.dataset.action}`);
      const out = document.getElementById("op-result");
      out.textContent = r.ok
        ? `${system}: ${button.dataset.action === "out" ? "held out" : "may join"}${r.data.reason ? ` (${r.data.reason})` : ""}`
        : `${system}: ${(r.data && r.data.detail) || `failed (${r.status})`}`;
      out.className = r.ok ? "ok" : "error";
    });
  }
});
