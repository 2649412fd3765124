// The one poller and progress bar for every page that follows a background job (imports, dataset archives,
// training runs, scoring jobs). Every endpoint answers with the one job progress shape (core.jobs.job_progress:
// done, total, percent, status, finished, ...); once the job has finished the page reloads, so the server renders
// the outcome.

const STATUS_CLASSES = ["queued", "running", "succeeded", "failed", "cancelled", "not_built"];

/** A [data-progress-bar] element with its .progress-bar fill; the status class colours it. */
export class ProgressBar {
  constructor(element) {
    this.element = element;
    this.fill = element.querySelector(".progress-bar");
  }

  set(percent, status) {
    this.fill.style.width = `${percent}%`;
    this.element.setAttribute("aria-valuenow", percent);
    if (status === undefined) return;
    this.element.classList.remove(...STATUS_CLASSES);
    this.element.classList.add(status);
  }
}

function percentOf({ percent, done, total }) {
  if (typeof percent === "number") return percent;
  return total ? Math.floor((100 * done) / total) : 0;
}

/**
 * Polls `url` every second until the job has finished, then reloads the page.
 * @param {string} url
 * @param {object} options
 * @param {(json) => void} [options.render] fills the page's own fields from the same answer
 * @param {HTMLElement} [options.bar] the [data-progress-bar] to move
 */
export function followProgress(url, { render = () => {}, bar } = {}) {
  const progressBar = bar ? new ProgressBar(bar) : null;
  let failures = 0;

  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const json = await response.json();
      failures = 0;
      const progress = json; // the common job progress: done, total, percent, status, finished
      if (progressBar) progressBar.set(percentOf(progress), progress.status);
      render(json);
      if (progress.finished) {
        window.location.reload();
        return;
      }
    } catch (err) {
      // A dropped request (server restart, network blip) should not stop the page; back off a little.
      failures += 1;
      console.warn("Progress poll failed:", err);
    }
    window.setTimeout(poll, Math.min(1000 * (1 + failures), 10000));
  }

  window.setTimeout(poll, 1000);
}

/** Shows a job's error text, or hides its element when there is none. */
export function showError(element, error) {
  element.textContent = error;
  element.hidden = !error;
}
