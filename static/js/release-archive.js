// Live progress of a dataset archive build: poll the archive endpoint every second while the build is
// queued or running, then reload once so the server renders the download link and the SHA-256.
(function () {
  "use strict";
  const section = document.getElementById("archive");
  if (!section) return;
  const ACTIVE = ["pending", "running"];
  if (!ACTIVE.includes(section.dataset.status)) return;

  const url = section.dataset.progressUrl;
  const bar = section.querySelector("[data-progress-bar]");
  const fill = bar.querySelector(".progress-bar");
  const field = (name) => section.querySelector(`[data-field="${name}"]`);

  function render(p) {
    field("status").textContent = p.status_display;
    field("written").textContent = p.members_written;
    field("total").textContent = p.members_total;
    field("percent").textContent = `${p.percent}%`;
    fill.style.width = `${p.percent}%`;
    bar.setAttribute("aria-valuenow", p.percent);
    bar.className = `progress large ${p.status}`;
    const error = field("error");
    error.textContent = p.error;
    error.hidden = !p.error;
  }

  window.HemaLoop.pollProgress(url, render);
})();
