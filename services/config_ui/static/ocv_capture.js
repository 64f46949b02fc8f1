// The wizard's "derive from a C/20 cycle": start or abort the master's capture, show its
// progress, and import the derived branches through the CSV import (PUT /api/wizard/ocv-csv).
"use strict";

(function () {
  const box = document.querySelector('[data-testid="ocv-capture"]');
  if (!box) return;
  const status = box.querySelector('[data-testid="ocv-capture-status"]');
  const importButton = box.querySelector('[data-testid="ocv-capture-import"]');
  const csvLink = box.querySelector('[data-testid="ocv-capture-csv"]');
  let timer = null;

  function show(reply) {
    if (!reply.ok || !reply.data) {
      status.textContent = `Status: the web application answered ${reply.status}.`;
      return null;
    }
    const r = reply.data.result || {};
    if (reply.data.status === "no_reply") {
      status.textContent = "Status: the master did not answer.";
      return null;
    }
    const parts = [`Status: ${r.state || "unknown"}`];
    if (r.phase) parts.push(`phase ${r.phase}`);
    if (r.progress_pct !== undefined && r.progress_pct !== null) parts.push(`${r.progress_pct} %`);
    if (r.moved_ah !== undefined && r.moved_ah !== null) parts.push(`${r.moved_ah} Ah moved`);
    let text = parts.join(", ");
    if (r.reason) text += ` (${r.reason})`;
    if (reply.data.status === "refused" && reply.data.reason) text += `: ${reply.data.reason}`;
    if (r.summary) {
      text += `. Capacity ${r.summary.capacity_ah} Ah, cell spread up to ${r.summary.max_spread_mv} mV.`;
    }
    status.textContent = text;
    const done = r.state === "done" && typeof r.csv === "string";
    importButton.hidden = !done;
    csvLink.hidden = !done;
    return r;
  }

  async function poll() {
    const r = show(await api("GET", "/api/wizard/ocv-capture"));
    const running = r && ["awaiting_start", "first", "second"].includes(r.state);
    clearTimeout(timer);
    if (running) timer = setTimeout(poll, 10000);
    return r;
  }

  async function importDerived() {
    const r = await poll();
    if (!r || typeof r.csv !== "string") return;
    const cap = r.summary ? `, capacity ${r.summary.capacity_ah} Ah` : "";
    const source = `C/20 cycle recorded by the stack, ${new Date().toISOString().slice(0, 10)}${cap}`;
    const reply = await api("PUT", "/api/wizard/ocv-csv", { csv: r.csv, source });
    if (reply.ok) {
      window.location.reload();
    } else {
      const errors = (reply.data && reply.data.errors && reply.data.errors.csv) || [];
      status.textContent = `Import refused: ${errors.join("; ") || reply.status}`;
    }
  }

  box.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-ocv-capture]");
    if (!button) return;
    const action = button.dataset.ocvCapture;
    if (action === "import") {
      await importDerived();
      return;
    }
    if (action === "abort" && !window.confirm("Abort the capture? What it recorded is lost.")) return;
    show(await api("POST", "/api/wizard/ocv-capture", { action }));
    await poll();
  });
  box.addEventListener("toggle", () => { if (box.open) poll(); });
})();
