// Shared by the pages that follow a background job (imports, dataset archives): poll a JSON progress
// endpoint every second, hand each answer to `render`, and reload once the job has finished so the
// server renders the outcome.
window.HemaLoop = window.HemaLoop || {};
window.HemaLoop.pollProgress = function (url, render) {
  "use strict";
  let failures = 0;

  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const progress = await response.json();
      failures = 0;
      render(progress);
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
};
