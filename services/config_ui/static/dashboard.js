// Live dashboard: server-sent events from /api/live, Chart.js for cells and history.
"use strict";

// unknown is a dash, never 0; a tiny negative value is no "-0.0"
const fmt = (v, digits) => (v === null || v === undefined ? "–" : (Number(v) + 0).toFixed(digits).replace(/^-(0\.?0*)$/, "$1"));
let cellsChart = null;
let historyChart = null;
let lastHistoryTs = 0;
const HISTORY_GAP_S = 3; // as the server breaks its 1 s history

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

// Unknown is never drawn as a number: an unknown cell is a gap with a grey band behind it,
// an unknown sensor a grey tile with a dash, and a flagged channel says why.
const UNKNOWN_COLOUR = "rgba(140, 149, 159, 0.25)";
const FLAG_SHORT = { open_wire: "open", sensor_fault: "fault", out_of_range: "range" };
const FLAG_TEXT = { open_wire: "open wire", sensor_fault: "sensor fault", out_of_range: "out of range" };

function cellColours(cells) {
  return cells.cell_v.map((_, i) =>
    i === cells.min_index ? "#1f6feb" : i === cells.max_index ? "#d1242f" : cells.balancing[i] ? "#bf8700" : "#8c959f");
}

function cellName(cells, i) {
  // modules and cells from 1 for people; the series number is in the tooltip
  return `M${cells.module_of_cell[i] + 1} · C${cells.index_in_module[i] + 1}`;
}

function whyUnknown(flags) {
  return flags.length ? flags.map((f) => FLAG_TEXT[f] || f).join(", ") : "no data";
}

function showCells(cells) {
  const labels = cells.cell_v.map((v, i) => cellName(cells, i) + (cells.cell_flags[i].length ? " ⚠" : v === null ? " ?" : ""));
  const colours = cellColours(cells);
  const known = cells.cell_v.filter((v) => v !== null);
  const lo = known.length ? Math.floor((Math.min(...known) - 0.02) * 50) / 50 : 0;
  const hi = known.length ? Math.ceil((Math.max(...known) + 0.02) * 50) / 50 : 1;
  // a full-height band where a cell is unknown, behind its (empty) place
  const bands = cells.cell_v.map((v) => (v === null ? [lo, hi] : null));
  if (!cellsChart) {
    cellsChart = new Chart(document.getElementById("cells-chart"), {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "cell voltage (V)", data: cells.cell_v, backgroundColor: colours, borderWidth: 0, grouped: false },
          { label: "unknown", data: bands, backgroundColor: UNKNOWN_COLOUR, borderWidth: 0, grouped: false },
        ],
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        onClick: (_ev, elements) => {
          if (!elements.length) return;
          const c = cellsChart.$cells, i = elements[0].index;
          openCell(c.module_of_cell[i], c.index_in_module[i], i + 1);
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: (c) => (cellsChart.data.datasets[0].data[c.dataIndex] === null
                ? `unknown: ${whyUnknown(cellsChart.$cells.cell_flags[c.dataIndex])}`
                : `${Number(c.raw).toFixed(3)} V`),
              footer: (items) => items.length ? `cell ${items[0].dataIndex + 1} in series` : "",
            },
          },
        },
        scales: { x: { ticks: { autoSkip: true, maxRotation: 0 } }, y: { title: { display: true, text: "V" }, ticks: {} } },
      },
    });
  }
  cellsChart.$cells = cells;
  cellsChart.data.labels = labels;
  cellsChart.data.datasets[0].data = cells.cell_v;
  cellsChart.data.datasets[0].backgroundColor = colours;
  cellsChart.data.datasets[1].data = bands;
  cellsChart.options.scales.y.min = known.length ? lo : undefined;
  cellsChart.options.scales.y.max = known.length ? hi : undefined;
  cellsChart.options.scales.y.ticks.display = known.length > 0; // no volt scale without a volt
  cellsChart.update("none");
  const n = cells.balancing.filter(Boolean).length;
  setText("balancing-text", n ? `balancing ${n} cell(s)` : "no cell balancing");
  setText("c-spread", fmt(cells.spread_mv, 1));
  // a silent module in one word; a flagged cell by name and reason
  const silent = cells.modules.filter((m) => !m.fresh).map((m) => m.module);
  const unknown = [
    ...silent.map((m) => `M${m + 1} (no data from the module)`),
    ...cells.cell_v.map((v, i) => (v === null && !silent.includes(cells.module_of_cell[i])
      ? `${cellName(cells, i)} (${whyUnknown(cells.cell_flags[i])})` : null)).filter(Boolean),
  ];
  setText("cells-unknown", unknown.length ? `unknown: ${unknown.join(", ")}` : "");
  showHeatmap(cells.modules);
}

function heatColour(t) {
  if (t === null || t === undefined) return "#d0d7de";
  const x = Math.max(0, Math.min(1, (t - 10) / 45)); // 10 °C blue … 55 °C red
  // light enough for dark text at WCAG AA contrast (axe-checked in the browser test)
  return `hsl(${Math.round(220 - 220 * x)}, 75%, 78%)`;
}

function showHeatmap(modules) {
  const box = document.getElementById("heatmap");
  if (!box) return;
  box.replaceChildren(...modules.map((mod) => {
    const row = document.createElement("div");
    row.className = mod.fresh ? "hrow" : "hrow stale";
    row.dataset.module = String(mod.module);
    const name = document.createElement("span");
    name.textContent = `M${mod.module + 1}`;
    name.title = mod.fresh ? "" : `module ${mod.module + 1}: no data`;
    row.appendChild(name);
    mod.temperatures.forEach((s) => {
      const cell = document.createElement("span");
      const t = s.temp_c;
      cell.className = s.flags.length ? "hcell flagged" : t === null ? "hcell unknown" : "hcell";
      cell.style.background = heatColour(t);
      cell.dataset.sensor = String(s.sensor_index);
      cell.dataset.flags = s.flags.join(" ");
      cell.textContent = t !== null ? t.toFixed(1) : s.flags.length ? FLAG_SHORT[s.flags[0]] || "–" : "–";
      const what = t !== null ? `${t.toFixed(1)} °C` : mod.fresh ? whyUnknown(s.flags) : "no data from the module";
      cell.title = `module ${mod.module + 1} sensor ${s.index + 1}: ${what}`;
      row.appendChild(cell);
    });
    return row;
  }));
}

function showAlarms(words, pack) {
  // each active code in words (shared/alarm_words.py): title, place, reading, since, what clears it
  const list = document.getElementById("alarms");
  const items = words.map((w) => {
    const li = document.createElement("li");
    li.className = w.level;
    li.dataset.code = w.code;
    const title = document.createElement("b");
    title.textContent = w.title;
    const parts = [title];
    if (w.place) {
      const place = document.createElement("span");
      place.className = "place";
      place.textContent = ` at ${w.place}`;
      place.title = w.place_detail;
      parts.push(place);
    }
    const detail = document.createElement("div");
    detail.className = "detail";
    detail.textContent = [
      w.reading,
      w.since_ts === null ? null : `since ${localTime(w.since_ts)}`,
      w.clears,
    ].filter((x) => x).join(" · ");
    const why = document.createElement("div");
    why.className = "why";
    why.textContent = w.explanation;
    li.replaceChildren(...parts, detail, why);
    return li;
  });
  if (pack.stale_modules.length) {
    const li = document.createElement("li");
    li.className = "alarm";
    li.textContent = `No data from module(s) ${pack.stale_modules.map((m) => m + 1).join(", ")}`;
    items.push(li);
  }
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    items.push(li);
  }
  list.replaceChildren(...items);
}

function showPack(p) {
  setText("v-voltage", fmt(p.voltage, 1));
  setText("v-current", fmt(p.current, 1));
  setText("v-power", fmt(p.power_w === null ? null : p.power_w / 1000, 2));
  setText("v-soc", fmt(p.soc, 1));
  setText("v-soh", fmt(p.soh, 1));
  setText("v-mode", p.mode);
  setText("v-contactors", p.contactors);
  const l = p.limits;
  setText("l-cvl", `${fmt(l.charge_voltage_v, 1)} V`);
  setText("l-dvl", `${fmt(l.discharge_voltage_v, 1)} V`);
  setText("l-ccl", `${fmt(l.charge_current_a, 1)} A`);
  setText("l-dcl", `${fmt(l.discharge_current_a, 1)} A`);
  // the reason in words (shared/limit_reasons.py), its code on hover
  for (const [id, side] of [["l-ccl-reason", "charge"], ["l-dcl-reason", "discharge"], ["l-cvl-reason", "charge_voltage"]]) {
    setText(id, p.limit_words[side] || "");
    document.getElementById(id).title = l[`${side}_reason`] || "";
  }
  setText("s-soc", p.soc === null ? "–" : `${fmt(p.soc, 1)} %${p.soc_std === null ? "" : ` ± ${fmt(p.soc_std, 1)} %`}`);
  setText("s-anchor", p.anchor_words);
  document.getElementById("s-anchor").title = p.last_anchor_ts === null ? "" : localTime(p.last_anchor_ts);
  setText("s-full-charge", p.full_charge_words);
  document.getElementById("s-full-charge").className = p.full_charge_requested ? "warn" : "";
  setText("c-min", fmt(p.cell_v_min, 3));
  setText("c-max", fmt(p.cell_v_max, 3));
  setText("t-min", fmt(p.temp_min_c, 1));
  setText("t-max", fmt(p.temp_max_c, 1));

}

function historySpan() {
  const select = document.getElementById("history-range");
  return select ? Number(select.value) : 3600;
}

async function loadHistory() {
  const span = historySpan();
  const r = await api("GET", `/api/history?seconds=${span}`);
  if (!r.ok) return;
  const points = r.data;
  const data = {
    labels: points.map((p) => (span > 86400 ? new Date(p.ts * 1000).toLocaleString() : new Date(p.ts * 1000).toLocaleTimeString())),
    datasets: [
      // null where unknown: the line breaks there (spanGaps false), it never drops to 0
      { label: "SOC (%)", data: points.map((p) => p.soc), yAxisID: "soc", borderColor: "#1f6feb", backgroundColor: "#1f6feb", pointRadius: 0, spanGaps: false },
      { label: "voltage (V)", data: points.map((p) => p.voltage), yAxisID: "v", borderColor: "#bf8700", backgroundColor: "#bf8700", pointRadius: 0, spanGaps: false },
    ],
  };
  lastHistoryTs = points.length ? points[points.length - 1].ts : 0;
  if (!historyChart) {
    historyChart = new Chart(document.getElementById("history-chart"), {
      type: "line", data,
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { soc: { position: "left", min: 0, max: 100 }, v: { position: "right", grid: { drawOnChartArea: false } } },
      },
    });
  } else {
    historyChart.data = data;
    historyChart.update("none");
  }
}

// between reloads of /api/history, the live values extend the plot (one point a second)
function appendHistory(ts, pack) {
  if (!historyChart || historySpan() !== 3600 || ts - lastHistoryTs < 1) return;
  const data = historyChart.data;
  if (lastHistoryTs && ts - lastHistoryTs > HISTORY_GAP_S) {
    // the master was silent: break the line rather than bridge the silence
    data.labels.push("");
    data.datasets.forEach((d) => d.data.push(null));
  }
  lastHistoryTs = ts;
  data.labels.push(new Date(ts * 1000).toLocaleTimeString());
  data.datasets[0].data.push(pack.soc);
  data.datasets[1].data.push(pack.voltage);
  if (data.labels.length > 3600) {
    data.labels.shift();
    data.datasets.forEach((d) => d.data.shift());
  }
  historyChart.update("none");
}

function connect() {
  const status = document.getElementById("live-status");
  const source = new EventSource("/api/live");
  let updates = 0;
  source.addEventListener("state", (ev) => {
    const s = JSON.parse(ev.data);
    updates += 1;
    if (s.pack) showPack(s.pack);
    if (s.pack) showAlarms(s.alarm_words, s.pack);
    showBanner(s.alarm_words || []);
    if (s.pack && !s.stale) appendHistory(s.ts, s.pack);
    if (s.cells) showCells(s.cells);
    status.className = s.stale ? "stale" : "live";
    status.textContent = s.stale
      ? (s.pack ? `no fresh data from the master for ${fmt(s.pack_age_s, 0)} s` : "no data from the master yet")
      : `live · updated ${new Date(s.ts * 1000).toLocaleTimeString()}`;
    status.dataset.updates = String(updates);
  });
  source.addEventListener("session_ended", () => {
    source.close();
    window.location.assign("/login?next=/");
  });
  source.onerror = () => {
    status.className = "stale";
    status.textContent = "connection to the UI lost; retrying…";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  connect();
  loadHistory();
  setInterval(loadHistory, 10000);
  const range = document.getElementById("history-range");
  if (range) range.addEventListener("change", loadHistory);
});

// --- one cell's history (GET /api/cells/{module}/{index}/history), the imbalance trend ---
let cellChart = null, spreadChart = null, openedCell = null;

async function openCell(module, index, series) {
  openedCell = { module, index, series };
  document.getElementById("cell-panel").hidden = false;
  await loadCell();
  document.getElementById("cell-panel").scrollIntoView({ block: "nearest" });
}

async function loadCell() {
  if (!openedCell) return;
  const { module, index, series } = openedCell;
  const seconds = Number(document.getElementById("cell-range").value);
  const since = Date.now() / 1000 - Math.min(seconds, 31 * 86400);
  document.getElementById("cell-csv").href = `/api/cells/history.csv?since_ts=${Math.floor(since)}`;
  const [r, b, s] = await Promise.all([
    api("GET", `/api/cells/${module}/${index}/history?seconds=${seconds}`),
    api("GET", `/api/cells/balancing?seconds=${seconds}`),
    api("GET", `/api/cells/imbalance?days=${Math.max(seconds / 86400, 1)}`),
  ]);
  const title = `M${module + 1} · C${index + 1} (cell ${series} in series)`;
  setText("cell-title", title);
  if (!r.ok) {
    setText("cell-summary", `no history: error ${r.status}: ${(r.data && r.data.detail) || ""}`);
    return;
  }
  const points = r.data.points;
  const known = points.map((p) => p.voltage_v).filter((v) => v !== null);
  const balanced = b.ok && b.data[String(module)] ? b.data[String(module)][index] : null;
  const volts = known.length ? `voltage ${fmt(Math.min(...known), 3)} … ${fmt(Math.max(...known), 3)} V` : "voltage unknown";
  setText("cell-summary", points.length
    ? `${points.length} minute(s); ${volts}; balanced ${balanced === null ? "–" : fmt(balanced / 60, 1)} min in this span`
    : "no minutes stored for this span yet (one is kept each minute)");
  const labels = points.map((p) => localTime(p.ts).slice(5, 16));
  const data = {
    labels,
    datasets: [
      { type: "line", label: "voltage (V)", data: points.map((p) => p.voltage_v), yAxisID: "v", borderColor: "#1f6feb", pointRadius: 0, spanGaps: false },
      { type: "bar", label: "balancing (s per minute)", data: points.map((p) => p.balancing_s), yAxisID: "s", backgroundColor: "#bf8700" },
    ],
  };
  if (cellChart) { cellChart.data = data; cellChart.update("none"); }
  else {
    cellChart = new Chart(document.getElementById("cell-chart"), {
      data,
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        scales: { v: { position: "left", title: { display: true, text: "V" } },
                  s: { position: "right", min: 0, max: 60, title: { display: true, text: "s" }, grid: { drawOnChartArea: false } } } },
    });
  }
  const days = s.ok ? s.data : [];
  const spread = { labels: days.map((d) => d.day), datasets: [{ label: "spread (mV)", data: days.map((d) => d.spread_mv), borderColor: "#d1242f", pointRadius: 2 }] };
  if (spreadChart) { spreadChart.data = spread; spreadChart.update("none"); }
  else {
    spreadChart = new Chart(document.getElementById("spread-chart"), { type: "line", data: spread,
      options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } } } });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const range = document.getElementById("cell-range");
  if (!range) return;
  range.addEventListener("change", loadCell);
  document.getElementById("cell-close").addEventListener("click", () => {
    openedCell = null;
    document.getElementById("cell-panel").hidden = true;
  });
});
