// Live view of a training run: follow the run's API endpoint while it is queued or running, update the
// progress bar, and redraw the per-epoch validation curves as a small inline SVG (no chart library).
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

const section = document.getElementById("run-progress");
const svg = document.getElementById("curves");
const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f6f8b", "#c2410c", "#15803d", "#7c3aed"];
const W = 640, H = 240, PAD = { left: 44, right: 44, top: 12, bottom: 28 };
const field = (name) => document.querySelector(`[data-field="${name}"]`);

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  svg.appendChild(node);
  return node;
}

function draw(history) {
  svg.replaceChildren();
  const byModel = new Map();
  history.forEach((row) => {
    const key = `${row.model_index ?? 0}:${row.model ?? ""}`;
    if (!byModel.has(key)) byModel.set(key, []);
    byModel.get(key).push(row);
  });
  const maxEpoch = Math.max(1, ...history.map((r) => r.epoch || 1));
  const maxLoss = Math.max(0.001, ...history.map((r) => r.val_loss || 0));
  const x = (e) => PAD.left + ((e - 1) / Math.max(1, maxEpoch - 1)) * (W - PAD.left - PAD.right);
  const yF1 = (v) => H - PAD.bottom - v * (H - PAD.top - PAD.bottom);
  const yLoss = (v) => H - PAD.bottom - (v / maxLoss) * (H - PAD.top - PAD.bottom);
  el("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, stroke: "#999" });
  el("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, stroke: "#999" });
  el("text", { x: 4, y: PAD.top + 10, "font-size": 11 }, "F1 1");
  el("text", { x: 4, y: H - PAD.bottom, "font-size": 11 }, "0");
  el("text", { x: W - PAD.right + 4, y: PAD.top + 10, "font-size": 11 }, maxLoss.toFixed(2));
  el("text", { x: W / 2 - 20, y: H - 6, "font-size": 11 }, `epoch (1–${maxEpoch})`);
  if (!history.length) {
    el("text", { x: W / 2 - 80, y: H / 2, "font-size": 13, fill: "#777" }, "No epoch finished yet");
    return;
  }
  [...byModel.entries()].forEach(([key, rows], i) => {
    const colour = COLOURS[i % COLOURS.length];
    const path = (y, name) => rows.filter((r) => typeof r[name] === "number")
      .map((r) => `${x(r.epoch)},${y(r[name])}`).join(" ");
    el("polyline", { points: path(yF1, "val_macro_f1"), fill: "none", stroke: colour, "stroke-width": 2, "data-series": `f1-${i}` });
    el("polyline", { points: path(yLoss, "val_loss"), fill: "none", stroke: colour, "stroke-dasharray": "4 3", "data-series": `loss-${i}` });
    rows.forEach((r) => typeof r.val_macro_f1 === "number" && el("circle", { cx: x(r.epoch), cy: yF1(r.val_macro_f1), r: 3, fill: colour }));
    el("text", { x: PAD.left + 8, y: PAD.top + 12 + 14 * i, "font-size": 11, fill: colour }, key.split(":")[1] || `model ${i + 1}`);
  });
}

function render(run) {
  field("status").textContent = run.status_display;
  field("status").className = `badge large ${run.status}`;
  field("model").textContent = run.model_name ? `Model ${run.model_index + 1}/${run.model_count}: ${run.model_name}` : "Waiting for a worker…";
  field("epoch").textContent = run.epoch;
  field("max-epochs").textContent = run.max_epochs;
  field("batch").textContent = run.batch;
  field("batches").textContent = run.batches_total;
  field("eta").textContent = run.eta_seconds === null ? "–" : `${run.eta_seconds} s`;
  field("percent").textContent = `${run.percent}%`;
  showError(field("error"), run.error);
  field("log").textContent = run.log_tail;
  draw(run.history);
}

if (section && svg) {
  draw(JSON.parse(document.getElementById("history-data").textContent));
  if (section.dataset.finished !== "true") {
    // Once finished the page reloads: the server renders the final state (model version link, no cancel button).
    followProgress(section.dataset.url, {
      bar: section.querySelector("[data-progress-bar]"),
      render,
    });
  }
}
markReady();
