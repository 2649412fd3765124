// The model's opinion beside a cell (decision support for adjudicators, researchers and admins; never on a
// page an annotator labels from): the top-3 calibrated probabilities as bars and a Grad-CAM overlay shown
// beside the cell on demand. The consensus page loads it per cell from the API; the image page gets it
// rendered by the server and only needs the toggle.
import { api, errorMessage } from "../hemaloop.js";

const REMEMBER = "hemaloop.showHeatmap";

export class ModelOpinion {
  /**
   * @param {HTMLElement} panel   the [data-model-opinion] section
   * @param {HTMLElement} figure  the [data-opinion-heatmap] figure beside the cell
   * @param {HTMLElement} host    gets the class "with-heatmap" while the heatmap shows (lays out the split)
   */
  constructor(panel, figure, host) {
    this.panel = panel;
    this.figure = figure;
    this.host = host;
    this.toggleButton = panel.querySelector("[data-action='toggle-heatmap']");
    this.top = panel.querySelector("[data-opinion-top]");
    this.version = panel.querySelector("[data-opinion-version]");
    this.message = panel.querySelector("[data-opinion-message]");
    this.image = figure.querySelector("img");
    this.caption = figure.querySelector("figcaption");
    this.heatmapUrl = this.image.dataset.src || "";
    this.loading = 0;
    this.toggleButton.addEventListener("click", (event) => {
      event.currentTarget.blur();
      this.toggle();
    });
    this.setVisible(this.heatmapUrl !== "" && this.remembered());
  }

  remembered() {
    try {
      return window.localStorage.getItem(REMEMBER) === "1";
    } catch {
      return false;
    }
  }

  remember(on) {
    try {
      window.localStorage.setItem(REMEMBER, on ? "1" : "0");
    } catch {
      // Private windows may refuse storage; the toggle still works for this page.
    }
  }

  /** Shows or hides the heatmap; the PNG is only requested the first time it is shown for a cell. */
  setVisible(on) {
    const visible = on && this.heatmapUrl !== "";
    if (visible && this.image.getAttribute("src") !== this.heatmapUrl) this.image.src = this.heatmapUrl;
    this.figure.hidden = !visible;
    this.host.classList.toggle("with-heatmap", visible);
    this.toggleButton.setAttribute("aria-pressed", String(visible));
  }

  /** The hotkey and the button. Returns false when there is no heatmap to show (no model yet). */
  toggle() {
    if (this.heatmapUrl === "") return false;
    const on = this.figure.hidden;
    this.remember(on);
    this.setVisible(on);
    return true;
  }

  clear(state = "loading", message = "") {
    this.panel.dataset.state = state;
    this.top.replaceChildren();
    this.version.textContent = "";
    this.message.textContent = message;
    this.heatmapUrl = "";
    this.image.removeAttribute("src");
    this.toggleButton.hidden = true;
    this.setVisible(false);
  }

  /** Renders /api/inference/images/<id>/opinion/. */
  render(data) {
    this.clear(data.state, data.message);
    if (data.state !== "ready") return;
    this.version.textContent = data.model_version.name + (data.source === "computed" ? " · scored now" : "");
    this.top.replaceChildren(...data.top.map((score) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "opinion-class";
      name.textContent = score.name;
      const bar = document.createElement("span");
      bar.className = "opinion-bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${(score.probability * 100).toFixed(1)}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "opinion-p";
      value.textContent = `${(score.probability * 100).toFixed(1)} %`;
      li.append(name, bar, value);
      return li;
    }));
    this.caption.textContent = `Grad-CAM: where the model sees ${data.top[0].name}`;
    this.image.alt = `Grad-CAM heatmap for ${data.top[0].name}`;
    this.heatmapUrl = data.heatmap_url;
    this.toggleButton.hidden = false;
    this.setVisible(this.remembered());
  }

  /** Fetches and renders the opinion of one cell; a late answer for a cell no longer shown is dropped. */
  async load(url) {
    const ticket = ++this.loading;
    this.clear("loading", "Asking the model…");
    let result;
    try {
      result = await api(url);
    } catch {
      if (ticket === this.loading) this.clear("unavailable", "The model's opinion could not be loaded.");
      return;
    }
    if (ticket !== this.loading) return;
    if (result.ok) this.render(result.data);
    else this.clear("unavailable", errorMessage(result));
  }
}
