// The blind labeling page: one cell at a time from the queue, a class hotkey submits at once,
// the next cell follows. The page only ever learns the cell's pixels, its random public id (item.image, never a
// database id) and this annotator's own progress.
import { Alert, api, errorMessage, flash, markReady, Toasts } from "./hemaloop.js";
import { holdKeys, hotkeyOf, isTyping, readTaxonomy } from "./hotkeys.js";
import { CellViewer } from "./viewer.js";

const root = document.getElementById("label-app");
const urls = {
  next: root.dataset.apiNext,
  labels: root.dataset.apiLabels,
  skip: root.dataset.apiSkip,
  undo: root.dataset.apiUndo,
  flag: root.dataset.apiFlag,
  progress: root.dataset.apiProgress,
};
const { names, hotkeys } = readTaxonomy();

const MAX_DURATION_MS = 24 * 3600 * 1000;
const RENEW_BEFORE_MS = 120 * 1000; // renew the hold this long before it expires, if the user is active
const EMPTY_POLL_MS = 30 * 1000;
const UNDO_GRACE_MS = Number(root.dataset.undoGraceSeconds) * 1000;
const UNDO_HINT = "Undo works only shortly after a label, before you move on; later, flag it (f) for an adjudicator.";
const TOO_LATE = "Too late to undo your last label. Press f to flag it, and an adjudicator will look at the cell again.";

const viewer = new CellViewer(root.querySelector("[data-viewer]"));
const toasts = new Toasts(root.querySelector("[data-toasts]"));
const alert = new Alert(root.querySelector("[data-alert]"));
const stage = root.querySelector("[data-stage]");
const empty = root.querySelector("[data-empty]");
const status = root.querySelector("[data-status]");

const state = {
  item: null, // the cell on screen, labelable; null while loading or empty
  shownAt: 0,
  busy: false,
  leaseExpiresAt: 0,
  lastActivity: Date.now(),
  // [{image, code}] of this session (image: the cell's public id), newest last, to name what an undo took back
  submitted: [],
  emptyTimer: null,
  // Until when the server lets this annotator undo (ms since the epoch); 0: nothing to undo now.
  undoUntil: Date.parse(root.dataset.undoUntil) || 0,
  undoTimer: null,
  unavailable: false, // the cell on screen has no loadable image: it can be skipped, not labeled
};

const undoButton = root.querySelector('[data-action="undo"]');
const undoHint = root.querySelector("[data-undo-hint]");

function undoAllowed() {
  return Date.now() < state.undoUntil;
}

/** Shows whether Undo works now, and says why not; re-checks itself when the grace period ends. */
function setUndoUntil(until) {
  state.undoUntil = until;
  window.clearTimeout(state.undoTimer);
  const allowed = undoAllowed();
  undoButton.setAttribute("aria-disabled", String(!allowed));
  undoButton.classList.toggle("is-unavailable", !allowed);
  undoHint.textContent = allowed ? UNDO_HINT : state.submitted.length ? TOO_LATE : UNDO_HINT;
  if (allowed) state.undoTimer = window.setTimeout(() => setUndoUntil(state.undoUntil), until - Date.now() + 50);
}

function setBusy(busy) {
  state.busy = busy;
  root.classList.toggle("busy", busy);
  root.setAttribute("aria-busy", String(busy));
}

function setStatus(text) {
  status.textContent = text;
}

async function refreshProgress() {
  try {
    const result = await api(urls.progress);
    if (!result.ok) return;
    for (const key of ["today", "total", "waiting"]) {
      const field = root.querySelector(`[data-progress="${key}"]`);
      if (field) field.textContent = result.data[key];
    }
  } catch {
    // progress is informative only; the next action refreshes it again
  }
}

function showEmpty() {
  state.item = null;
  clearUnavailable();
  viewer.clear();
  delete root.dataset.cell;
  stage.classList.add("is-empty");
  root.classList.add("no-cell");
  empty.hidden = false;
  setStatus("Queue empty");
  window.clearTimeout(state.emptyTimer);
  state.emptyTimer = window.setTimeout(() => {
    if (!state.item && !state.busy && document.visibilityState === "visible") loadNext();
  }, EMPTY_POLL_MS);
}

async function showItem(item) {
  window.clearTimeout(state.emptyTimer);
  state.item = null;
  clearUnavailable();
  stage.classList.remove("is-empty");
  root.classList.remove("no-cell");
  empty.hidden = true;
  setStatus("Loading cell…");
  let shown;
  try {
    shown = await viewer.show(item.image_url);
  } catch {
    await showUnavailable(item);
    return;
  }
  if (!shown) return;
  state.item = item;
  state.leaseExpiresAt = Date.parse(item.lease_expires_at) || 0;
  state.shownAt = performance.now();
  root.dataset.cell = item.image;
  setStatus("Choose a class");
}

/** The cell's image did not load: say so in place of the cell, keep the cell so Skip works, and never fall back
 * to the "nothing left" or "server not reachable" states, which would misstate what went wrong. */
async function showUnavailable(item) {
  viewer.clear();
  const token = viewer.token;
  const reason = await imageProblem(item.image_url);
  if (token !== viewer.token) return; // another cell was asked for meanwhile (undo, hold expiry)
  state.item = item;
  state.unavailable = true;
  state.leaseExpiresAt = Date.parse(item.lease_expires_at) || 0;
  root.dataset.cell = item.image;
  root.classList.add("image-unavailable");
  setStatus("Image unavailable — press s to skip");
  alert.show(`This cell's image cannot be loaded. ${reason} Press s (Skip) to go on to the next cell.`, "bad");
}

/** Why the image did not load, in the server's words when it answered (410: the file is gone or unreadable). */
async function imageProblem(url) {
  try {
    const result = await api(url);
    if (result.ok) return "The file is not an image the browser can show.";
    return errorMessage(result, `The server answered HTTP ${result.status}.`);
  } catch {
    return "The server is not reachable.";
  }
}

function clearUnavailable() {
  state.unavailable = false;
  root.classList.remove("image-unavailable");
}

function refuseUnseenLabel(code) {
  alert.show(`Not labeled (${names[code]}): this cell's image cannot be loaded, so it cannot be judged. ` +
    "Press s (Skip) to go on.", "bad");
}

/** Asks the queue for the cell to show (it returns the cell already held, if any). */
async function loadNext() {
  setBusy(true);
  try {
    const result = await api(urls.next, { method: "POST" });
    if (result.status === 204) {
      showEmpty();
    } else if (result.ok) {
      await showItem(result.data);
    } else {
      alert.show(errorMessage(result), "bad");
    }
  } catch (error) {
    alert.show("Could not load the next cell: the server is not reachable. Press “Check again” or reload.", "bad");
    showEmpty();
    console.warn("queue/next failed:", error);
  } finally {
    setBusy(false);
  }
  refreshProgress();
}

async function submit(code, button) {
  if (state.busy || !state.item) return;
  if (state.unavailable) {
    refuseUnseenLabel(code);
    return;
  }
  const item = state.item;
  const durationMs = Math.min(MAX_DURATION_MS, Math.max(0, Math.round(performance.now() - state.shownAt)));
  flash(button || root.querySelector(`.class-btn[data-code="${code}"]`));
  setBusy(true);
  let result;
  try {
    result = await api(urls.labels, {
      method: "POST",
      body: { image: item.image, cell_class: code, duration_ms: durationMs },
    });
  } catch (error) {
    setBusy(false);
    alert.show(`Not saved: the server is not reachable. Your label (${names[code]}) was not recorded; press it again.`,
      "bad");
    console.warn("label submit failed:", error);
    return;
  }
  setBusy(false);
  if (result.status === 201) {
    alert.clear();
    state.submitted.push({ image: item.image, code });
    setUndoUntil(Date.now() + UNDO_GRACE_MS);
    state.item = null;
    toasts.show(`Labeled: ${names[code]} — Undo with ⌫`, { kind: "ok" });
    await loadNext();
  } else if (result.status === 409 || result.status === 404) {
    // The cell was taken away (no longer needed, hold expired): say so, in the server's words, and move on.
    alert.show(`Your label (${names[code]}) was not saved. ${errorMessage(result)}`, "warn");
    state.item = null;
    await loadNext();
  } else {
    alert.show(`Your label (${names[code]}) was not saved. ${errorMessage(result)}`, "bad");
  }
}

async function skip() {
  if (state.busy || !state.item) return;
  const item = state.item;
  flash(root.querySelector('[data-action="skip"]'));
  setBusy(true);
  try {
    const result = await api(urls.skip, { method: "POST", body: { image: item.image } });
    setBusy(false);
    if (!result.ok) {
      alert.show(errorMessage(result), "bad");
      return;
    }
  } catch {
    setBusy(false);
    alert.show("Could not skip: the server is not reachable.", "bad");
    return;
  }
  alert.clear();
  state.item = null;
  setUndoUntil(0); // moving on ends the grace period of the last label
  toasts.show("Skipped — the cell goes back to your colleagues", { kind: "info" });
  await loadNext();
}

async function undo() {
  if (state.busy) return;
  if (!undoAllowed()) {
    alert.show(state.submitted.length || state.undoUntil ? TOO_LATE : "You have no label to undo right now.", "info");
    return;
  }
  flash(undoButton);
  setBusy(true);
  let result;
  try {
    result = await api(urls.undo, { method: "POST" });
  } catch {
    setBusy(false);
    alert.show("Could not undo: the server is not reachable.", "bad");
    return;
  }
  setBusy(false);
  if (!result.ok) {
    if (result.status === 409 || result.status === 404) setUndoUntil(0);
    alert.show(errorMessage(result), result.status === 404 ? "info" : "warn");
    return;
  }
  setUndoUntil(0);
  alert.clear();
  const last = state.submitted.at(-1);
  const what = last && last.image === result.data.image ? `${names[last.code]} ` : "";
  if (last && last.image === result.data.image) state.submitted.pop();
  setBusy(true);
  try {
    await showItem(result.data);
  } finally {
    setBusy(false);
  }
  toasts.show(`Undone: label ${what}taken back — label this cell again`, { kind: "info" });
  refreshProgress();
}

async function flagLast() {
  if (state.busy) return;
  flash(root.querySelector('[data-action="flag"]'));
  setBusy(true);
  let result;
  try {
    result = await api(urls.flag, { method: "POST", body: {} });
  } catch {
    alert.show("Could not flag your label: the server is not reachable.", "bad");
    return;
  } finally {
    setBusy(false);
  }
  if (result.status === 204) {
    alert.clear();
    toasts.show("Flagged: an adjudicator will look at your last label again", { kind: "ok" });
  } else {
    alert.show(errorMessage(result), result.status === 404 ? "info" : "bad");
  }
}

/** Keeps the hold on the cell on screen while the annotator is working on it (not while they are away). */
async function renewHold() {
  if (!state.item || state.busy || document.visibilityState !== "visible") return;
  if (state.leaseExpiresAt - Date.now() > RENEW_BEFORE_MS) return; // not due yet
  if (Date.now() - state.lastActivity > RENEW_BEFORE_MS) return; // idle: let the hold lapse for colleagues
  const current = state.item;
  let result;
  try {
    result = await api(urls.next, { method: "POST" });
  } catch {
    return; // try again on the next tick
  }
  if (state.item !== current) return;
  if (result.ok && result.data.image === current.image) {
    state.leaseExpiresAt = Date.parse(result.data.lease_expires_at) || 0;
    return;
  }
  if (Date.now() < state.leaseExpiresAt) return; // another held cell came first; this one is still ours
  alert.show("Your hold on this cell expired and it went to a colleague; here is the next one.", "warn");
  if (result.status === 204) showEmpty();
  else if (result.ok) await showItem(result.data);
}

function onKeyDown(event) {
  if (isTyping(event) || event.altKey || event.metaKey) return;
  if (event.ctrlKey) {
    if (event.key === "z" || event.key === "Z") {
      event.preventDefault();
      if (!event.repeat) undo();
    }
    return;
  }
  if (event.key === "Backspace") {
    event.preventDefault();
    if (!event.repeat) undo();
    return;
  }
  if (viewer.handleKey(event)) {
    event.preventDefault();
    return;
  }
  const key = hotkeyOf(event);
  if (key === "s") {
    event.preventDefault();
    if (!event.repeat) skip();
    return;
  }
  if (key === "f") {
    event.preventDefault();
    if (!event.repeat) flagLast();
    return;
  }
  if (hotkeys.has(key)) {
    event.preventDefault();
    if (!event.repeat) submit(hotkeys.get(key));
  }
}

// Keys pressed before the first cell is on screen are not lost silently, and never label a cell nobody has
// looked at: once the cell shows, the page says they were ignored.
const keys = holdKeys(onKeyDown);
for (const type of ["keydown", "pointermove", "wheel"]) {
  document.addEventListener(type, () => { state.lastActivity = Date.now(); }, { passive: true });
}
root.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || !root.contains(button)) return;
  button.blur(); // keep the keyboard on the page, not on the button
  if (button.dataset.code) submit(button.dataset.code, button);
  else if (button.dataset.action === "skip") skip();
  else if (button.dataset.action === "undo") undo();
  else if (button.dataset.action === "flag") flagLast();
  else if (button.dataset.action === "refresh") {
    alert.clear();
    loadNext();
  }
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  if (state.item && Date.now() > state.leaseExpiresAt) {
    state.lastActivity = Date.now();
    renewHold();
  } else if (!state.item && !state.busy) {
    loadNext();
  }
});
window.setInterval(renewHold, 30 * 1000);

setUndoUntil(state.undoUntil);
markReady();
loadNext().finally(() => {
  if (keys.discard()) {
    toasts.show("Keys pressed before the cell appeared were ignored — look at the cell, then press again", {
      kind: "warn",
    });
  }
});
