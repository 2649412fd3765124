// Live progress of a lab-screen study: follow its API while it is queued or running; the page reloads once it has
// finished, so the server renders the tables and plots.
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

const section = document.getElementById("study-progress");
if (section) {
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  followProgress(section.dataset.url, {
    bar: section.querySelector("[data-progress-bar]"),
    render(p) {
      field("done").textContent = p.done;
      field("total").textContent = p.total;
      field("percent").textContent = `${p.percent}%`;
      field("eta").textContent = p.eta_seconds ?? "–";
      showError(field("error"), p.error);
    },
  });
}
markReady();
