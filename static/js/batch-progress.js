// Live progress for the import batch page: poll the progress endpoint every second until the
// batch is done or failed, then reload once so the server renders the per-file report.
(function () {
  "use strict";
  const section = document.getElementById("batch-progress");
  if (!section || section.dataset.finished === "true") return;

  const url = section.dataset.progressUrl;
  const bar = section.querySelector("[data-progress-bar]");
  const fill = bar.querySelector(".progress-bar");
  const badge = document.querySelector("[data-batch-status]");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);

  const STATUS_NAMES = { pending: "Pending", running: "Running", done: "Done", failed: "Failed" };
  function render(p) {
    for (const name of ["processed", "total", "imported", "duplicates", "rejected"]) {
      field(name).textContent = p[name];
    }
    field("percent").textContent = `${p.percent}%`;
    fill.style.width = `${p.percent}%`;
    bar.setAttribute("aria-valuenow", p.percent);
    bar.className = `progress large ${p.status}`;
    badge.className = `badge large ${p.status}`;
    badge.textContent = STATUS_NAMES[p.status] || p.status;
    const error = field("error");
    error.textContent = p.error;
    error.hidden = !p.error;
  }

  window.HemaLoop.pollProgress(url, render);
})();
