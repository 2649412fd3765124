// Live progress of a dataset archive build: follow the archive endpoint while the build is queued or running,
// then the page reloads once so the server renders the download link and the SHA-256.
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

const ACTIVE = ["queued", "running"];
const section = document.getElementById("archive");
if (section && ACTIVE.includes(section.dataset.status)) {
  const field = (name) => section.querySelector(`[data-field="${name}"]`);

  followProgress(section.dataset.progressUrl, {
    bar: section.querySelector("[data-progress-bar]"),
    render(p) {
      field("status").textContent = p.status_display;
      field("done").textContent = p.done;
      field("total").textContent = p.total;
      field("percent").textContent = `${p.percent}%`;
      showError(field("error"), p.error);
    },
  });
}
markReady();
