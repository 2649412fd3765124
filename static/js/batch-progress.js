// Live progress for the import batch page: follow the progress endpoint until the batch is done or failed,
// then the page reloads once so the server renders the per-file report.
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

const section = document.getElementById("batch-progress");
if (section && section.dataset.finished !== "true") {
  const badge = document.querySelector("[data-batch-status]");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const STATUS_NAMES = { pending: "Pending", running: "Running", done: "Done", failed: "Failed" };

  followProgress(section.dataset.progressUrl, {
    bar: section.querySelector("[data-progress-bar]"),
    read: (p) => ({ done: p.processed, total: p.total, percent: p.percent, status: p.status, finished: p.finished }),
    render(p) {
      for (const name of ["processed", "total", "imported", "duplicates", "rejected"]) {
        field(name).textContent = p[name];
      }
      field("percent").textContent = `${p.percent}%`;
      badge.className = `badge large ${p.status}`;
      badge.textContent = STATUS_NAMES[p.status] || p.status;
      showError(field("error"), p.error);
    },
  });
}
markReady();
