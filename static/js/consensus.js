// The consensus page: the longest-waiting cell with both labels; the adjudicator chooses the final class
// with the labeling hotkeys (any class), adds an optional note and resolves with Enter; the next follows.
import { Alert, api, errorMessage, flash, formatDateTime, markReady, Toasts } from "./hemaloop.js";
import { hasModifier, holdKeys, hotkeyOf, isTyping, readTaxonomy } from "./hotkeys.js";
import { ModelOpinion } from "./inference/model-opinion.js";
import { SimilarCells } from "./inference/similar-cells.js";
import { CellViewer } from "./viewer.js";

const root = document.getElementById("consensus-app");
const urls = {
  list: root.dataset.apiList,
  resolve: (id) => root.dataset.apiResolve.replace("/0/", `/${id}/`),
  detail: (id) => root.dataset.detailUrl.replace("/0/", `/${id}/`),
  opinion: (id) => root.dataset.apiOpinion.replace("/0/", `/${id}/`),
  similar: (id) => root.dataset.apiSimilar.replace("/0/", `/${id}/`),
};
const { names, hotkeys } = readTaxonomy();

const viewer = new CellViewer(root.querySelector("[data-viewer]"));
const toasts = new Toasts(root.querySelector("[data-toasts]"));
const alert = new Alert(root.querySelector("[data-alert]"));
const el = {
  stage: root.querySelector("[data-stage]"),
  empty: root.querySelector("[data-empty]"),
  status: root.querySelector("[data-status]"),
  proposals: root.querySelector("[data-proposals]"),
  labels: root.querySelector("[data-labels]"),
  reopened: root.querySelector("[data-reopened]"),
  historyLink: root.querySelector("[data-history-link]"),
  choicePanel: root.querySelector("[data-choice-panel]"),
  note: root.querySelector("[data-note]"),
  choice: root.querySelector("[data-choice]"),
  resolve: root.querySelector("[data-resolve]"),
  form: root.querySelector("[data-resolve-form]"),
  waiting: root.querySelector("[data-waiting]"),
  panelEmpty: root.querySelector("[data-panel-empty]"),
};
const buttons = [...root.querySelectorAll(".class-btn")];
// Decision support, present only when the server rendered it (never for annotators).
const opinionSlot = root.querySelector("[data-opinion-slot]");
const opinion = opinionSlot
  ? new ModelOpinion(opinionSlot.querySelector("[data-model-opinion]"), el.stage.querySelector("[data-opinion-heatmap]"),
    el.stage)
  : null;
const similarSlot = root.querySelector("[data-similar-slot]");
const similar = similarSlot ? new SimilarCells(similarSlot.querySelector("[data-similar-cells]")) : null;

const state = { item: null, selected: null, busy: false };

function setBusy(busy) {
  state.busy = busy;
  root.classList.toggle("busy", busy);
  root.setAttribute("aria-busy", String(busy));
  el.resolve.disabled = busy || !state.selected || !state.item;
}

function setWaiting(count) {
  el.waiting.textContent = count;
  const badge = document.querySelector("[data-consensus-badge]");
  if (badge) {
    badge.textContent = count;
    badge.hidden = count === 0;
  }
}

function select(code) {
  if (!state.item || state.busy) return;
  state.selected = code;
  for (const button of buttons) {
    const chosen = button.dataset.code === code;
    button.classList.toggle("chosen", chosen);
    button.setAttribute("aria-pressed", String(chosen));
  }
  el.choice.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = names[code];
  el.choice.append("Final: ", strong, " — ⏎ to resolve");
  setBusy(false);
}

function renderLabels(item) {
  el.labels.replaceChildren(...item.labels.map((label, index) => {
    const li = document.createElement("li");
    li.className = "proposal";
    const tag = document.createElement("span");
    tag.className = "proposal-tag";
    tag.textContent = String.fromCharCode(65 + index);
    const body = document.createElement("div");
    const cls = document.createElement("strong");
    cls.className = "proposal-class";
    cls.textContent = names[label.cell_class] || label.cell_class;
    const meta = document.createElement("span");
    meta.className = "proposal-meta";
    const who = document.createElement("span");
    who.className = "proposal-who";
    who.textContent = label.annotator;
    const when = document.createElement("time");
    when.dateTime = label.created_at;
    when.textContent = formatDateTime(label.created_at);
    meta.append("by ", who, " · ", when);
    if (label.flagged) meta.append(" · flagged by its annotator for another look");
    body.append(cls, meta);
    li.append(tag, body);
    return li;
  }));
  // Mark the proposed classes on the buttons, with the letter of who proposed each.
  for (const button of buttons) {
    const letters = item.labels
      .map((label, index) => (label.cell_class === button.dataset.code ? String.fromCharCode(65 + index) : null))
      .filter(Boolean);
    button.classList.toggle("proposed", letters.length > 0);
    button.querySelector(".proposed-by")?.remove();
    if (letters.length) {
      const mark = document.createElement("span");
      mark.className = "proposed-by";
      mark.textContent = letters.join("+");
      mark.title = `Proposed by label ${letters.join(" and ")}`;
      button.append(mark);
    }
  }
}

function renderReopened(reopened) {
  el.reopened.hidden = !reopened;
  el.reopened.replaceChildren();
  if (!reopened) return;
  const title = document.createElement("strong");
  title.textContent = "Re-opened";
  const quote = document.createElement("q");
  quote.textContent = reopened.note;
  el.reopened.append(title, ` by ${reopened.actor || "system"} · ${formatDateTime(reopened.created_at)} · was ${
    names[reopened.cell_class] || reopened.cell_class}`, quote);
}

/** Forgets the previous cell's choice, note and proposal marks. */
function resetChoice() {
  state.selected = null;
  for (const button of buttons) {
    button.classList.remove("chosen", "proposed");
    button.setAttribute("aria-pressed", "false");
    button.querySelector(".proposed-by")?.remove();
  }
  el.note.value = "";
  el.choice.textContent = "Press a class key to choose";
}

function showEmpty() {
  state.item = null;
  resetChoice();
  viewer.clear();
  delete root.dataset.imageId;
  el.stage.classList.add("is-empty");
  el.empty.hidden = false;
  el.proposals.hidden = true;
  el.choicePanel.disabled = true;
  el.choicePanel.hidden = true;
  el.panelEmpty.hidden = false;
  if (opinion) {
    opinion.clear("empty");
    opinionSlot.hidden = true;
  }
  if (similar) {
    similar.clear("empty");
    similarSlot.hidden = true;
  }
  el.status.textContent = "Queue empty";
  setBusy(false);
}

async function show(item) {
  state.item = null;
  resetChoice();
  el.stage.classList.remove("is-empty");
  el.empty.hidden = true;
  el.proposals.hidden = false;
  el.choicePanel.disabled = false;
  el.choicePanel.hidden = false;
  el.panelEmpty.hidden = true;
  el.historyLink.href = urls.detail(item.image);
  renderLabels(item);
  renderReopened(item.reopened);
  if (opinion) {
    opinionSlot.hidden = false;
    opinion.load(urls.opinion(item.image)); // not awaited: the cell and the keys never wait for the model
  }
  if (similar) {
    similarSlot.hidden = false;
    similar.load(urls.similar(item.image)); // not awaited either
  }
  el.status.textContent = "Loading cell…";
  await viewer.show(item.image_url);
  state.item = item;
  root.dataset.imageId = String(item.image);
  el.status.textContent = "Choose the final class";
  setBusy(false);
}

async function loadNext() {
  setBusy(true);
  try {
    const result = await api(urls.list);
    if (!result.ok) {
      alert.show(errorMessage(result), "bad");
      return;
    }
    setWaiting(result.data.count);
    const next = result.data.results[0];
    if (!next) {
      showEmpty();
      return;
    }
    await show(next);
  } catch (error) {
    alert.show("Could not load the next cell: the server is not reachable. Press “Check again” or reload.", "bad");
    console.warn("consensus list failed:", error);
  } finally {
    setBusy(false);
  }
}

async function resolve() {
  if (state.busy || !state.item) return;
  if (!state.selected) {
    alert.show("Choose the final class first: press its key or click it.", "info");
    return;
  }
  const item = state.item;
  const code = state.selected;
  setBusy(true);
  let result;
  try {
    result = await api(urls.resolve(item.image), { method: "POST", body: { cell_class: code, note: el.note.value } });
  } catch {
    setBusy(false);
    alert.show(`Not saved: the server is not reachable. The final class (${names[code]}) was not recorded.`, "bad");
    return;
  }
  setBusy(false);
  if (result.ok) {
    alert.clear();
    toasts.show(`Resolved: ${names[code]}`, { kind: "ok" });
    el.note.blur();
    await loadNext();
  } else if (result.status === 409 || result.status === 404) {
    // Another adjudicator was first: their decision stands. Say so in the server's words and move on.
    alert.show(`Your decision (${names[code]}) was not saved. ${errorMessage(result)}`, "warn");
    el.note.blur();
    await loadNext();
  } else {
    alert.show(`Your decision (${names[code]}) was not saved. ${errorMessage(result)}`, "bad");
  }
}

function onKeyDown(event) {
  if (event.target === el.note) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      resolve();
    } else if (event.key === "Escape") {
      el.note.blur();
    }
    return;
  }
  if (isTyping(event) || hasModifier(event)) return;
  if (event.key === "Enter") {
    event.preventDefault();
    if (!event.repeat) resolve();
    return;
  }
  if (viewer.handleKey(event)) {
    event.preventDefault();
    return;
  }
  const key = hotkeyOf(event);
  if (key === "n" && state.item) {
    event.preventDefault();
    el.note.focus();
    return;
  }
  if (key === "h" && opinion && state.item && opinion.toggle()) {
    event.preventDefault();
    return;
  }
  if (hotkeys.has(key)) {
    event.preventDefault();
    const code = hotkeys.get(key);
    flash(buttons.find((b) => b.dataset.code === code));
    select(code);
  }
}

// The server rendered the first cell's labels, so an adjudicator may press its class before the image has
// decoded: hold such keys and apply them once the cell takes keys.
const keys = holdKeys(onKeyDown);
root.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || !root.contains(button) || button.type === "submit") return;
  button.blur();
  if (button.dataset.code) select(button.dataset.code);
  else if (button.dataset.action === "refresh") {
    alert.clear();
    loadNext();
  }
});
el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  resolve();
});

/** Shows the cell the server rendered; the page is ready once that cell takes keys (its data-image-id is
 * already in the HTML, so tests and users cannot tell from it). */
async function start() {
  const initial = JSON.parse(document.getElementById("consensus-item").textContent);
  try {
    if (initial) await show(initial);
    else showEmpty();
  } finally {
    keys.release();
    markReady();
  }
}

start();
