// The similar cells with a final class beside a cell (a reference atlas from the lab's own cells; never on a page
// an annotator labels from). The consensus page loads them per cell from the API; the image page gets them
// rendered by the server.
import { api, errorMessage } from "../hemaloop.js";

export class SimilarCells {
  /** @param {HTMLElement} panel the [data-similar-cells] section */
  constructor(panel) {
    this.panel = panel;
    this.list = panel.querySelector("[data-similar-list]");
    this.message = panel.querySelector("[data-similar-message]");
    this.loading = 0;
  }

  clear(state = "loading", message = "") {
    this.panel.dataset.state = state;
    this.list.replaceChildren();
    this.message.textContent = message;
  }

  /** Renders /api/inference/images/<id>/similar/. */
  render(data) {
    this.clear(data.state, data.message);
    this.list.replaceChildren(...data.cells.map((cell) => {
      const li = document.createElement("li");
      li.dataset.similarId = String(cell.id);
      const link = document.createElement("a");
      link.href = cell.detail_url;
      link.target = "_blank";
      link.rel = "noopener";
      link.title = `Similarity ${cell.similarity.toFixed(3)}`;
      const image = document.createElement("img");
      image.src = cell.thumbnail_url;
      image.alt = `Cell labeled ${cell.final_label.name}`;
      image.loading = "lazy";
      const name = document.createElement("span");
      name.className = "similar-class";
      name.textContent = cell.final_label.name;
      const similarity = document.createElement("span");
      similarity.className = "similar-sim";
      similarity.textContent = cell.similarity.toFixed(3);
      link.append(image, name, similarity);
      li.append(link);
      return li;
    }));
  }

  /** Fetches and renders one cell's neighbours; a late answer for a cell no longer shown is dropped. */
  async load(url) {
    const ticket = ++this.loading;
    this.clear("loading", "Looking up similar cells…");
    let result;
    try {
      result = await api(url);
    } catch {
      if (ticket === this.loading) this.clear("unavailable", "Similar cells could not be loaded.");
      return;
    }
    if (ticket !== this.loading) return;
    if (result.ok) this.render(result.data);
    else this.clear("unavailable", errorMessage(result));
  }
}
