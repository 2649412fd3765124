// The Scoring page: each unfinished job (scoring, embedding, refresh) follows its progress endpoint; the page
// reloads when one finishes.
import { markReady } from "./hemaloop.js";
import { followProgress, showError } from "./progress.js";

for (const row of document.querySelectorAll(
  "#scoring-jobs tr[data-progress-url], #index-jobs tr[data-progress-url], #refresh-jobs tr[data-progress-url]",
)) {
  const field = (name) => row.querySelector(`[data-field="${name}"]`);
  followProgress(row.dataset.progressUrl, {
    bar: row.querySelector("[data-progress-bar]"),
    render(p) {
      field("done").textContent = p.done;
      field("total").textContent = p.total;
      field("percent").textContent = `${p.percent}%`;
      field("status").textContent = p.status_display;
      field("status").className = `badge ${p.status}`;
      field("speed").textContent = p.speed;
      field("speed").hidden = !p.speed;
      showError(field("error"), p.error);
    },
  });
}
markReady();
