// Live progress for the import batch page: follow the progress endpoint until the batch has finished,
// then the page reloads once so the server renders the per-file report.
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

const section = document.getElementById("batch-progress");
if (section && section.dataset.finished !== "true") {
  const badge = document.querySelector("[data-batch-status]");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);

  followProgress(section.dataset.progressUrl, {
    bar: section.querySelector("[data-progress-bar]"),
    render(p) {
      for (const name of ["done", "total", "imported", "duplicates", "rejected"]) {
        field(name).textContent = p[name];
      }
      field("percent").textContent = `${p.percent}%`;
      badge.className = `badge large ${p.status}`;
      badge.textContent = p.status_display;
      showError(field("error"), p.error);
    },
  });
}
markReady();
