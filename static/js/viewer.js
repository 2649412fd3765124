// The cell viewer: the image fitted to the available space, zoom (wheel, keys) about the pointer,
// pan by dragging, reset by double-click. Above 3x the pixels are drawn unsmoothed so that
// granules and chromatin stay sharp instead of blurring.

const MIN_ZOOM = 1;
const MAX_ZOOM = 12;
const SHARP_FROM = 3; // screen px per image px from which smoothing stops (typical fit is 2-2.6x: smooth)

export class CellViewer {
  constructor(root) {
    this.root = root;
    this.image = root.querySelector("[data-viewer-image]");
    this.zoomLabel = root.querySelector("[data-viewer-zoom]");
    this.spinner = root.querySelector("[data-viewer-spinner]");
    this.natural = { width: 0, height: 0 };
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.drag = null;
    this.token = 0;

    root.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    root.addEventListener("pointerdown", (event) => this.onPointerDown(event));
    root.addEventListener("pointermove", (event) => this.onPointerMove(event));
    root.addEventListener("pointerup", (event) => this.onPointerUp(event));
    root.addEventListener("pointercancel", (event) => this.onPointerUp(event));
    root.addEventListener("dblclick", () => this.reset());
    new ResizeObserver(() => this.layout()).observe(root);
  }

  /** Downloads and decodes the image before swapping it in, so no half-drawn cell is ever shown. */
  async show(url) {
    const token = ++this.token;
    const spinnerTimer = window.setTimeout(() => { this.spinner.hidden = false; }, 150);
    try {
      const loader = new Image();
      loader.src = url;
      await loader.decode();
      if (token !== this.token) return false; // a newer show() won
      this.natural = { width: loader.naturalWidth, height: loader.naturalHeight };
      this.image.src = url;
      this.image.hidden = false;
      this.zoom = 1;
      this.pan = { x: 0, y: 0 };
      this.layout();
      await new Promise((resolve) => window.requestAnimationFrame(() => resolve()));
      return true;
    } finally {
      window.clearTimeout(spinnerTimer);
      if (token === this.token) this.spinner.hidden = true;
    }
  }

  clear() {
    this.token += 1;
    this.image.hidden = true;
    this.image.removeAttribute("src");
    this.spinner.hidden = true;
  }

  fitScale() {
    const { width, height } = this.natural;
    if (!width || !height) return 1;
    const box = this.root.getBoundingClientRect();
    // Leave a margin for the zoom and status read-outs, so they never cover the cell at fit.
    return Math.max(0.05, Math.min((box.width - 32) / width, (box.height - 76) / height));
  }

  layout() {
    if (!this.natural.width) return;
    const fit = this.fitScale();
    this.image.style.width = `${this.natural.width * fit}px`;
    this.image.style.height = `${this.natural.height * fit}px`;
    this.image.style.transform =
      `translate(-50%, -50%) translate(${this.pan.x}px, ${this.pan.y}px) scale(${this.zoom})`;
    const magnification = fit * this.zoom;
    this.image.classList.toggle("sharp", magnification >= SHARP_FROM);
    this.zoomLabel.textContent = this.zoom === 1 ? `Fit · ${Math.round(magnification * 100)} %`
      : `${Math.round(magnification * 100)} %`;
    this.root.classList.toggle("zoomed", this.zoom > 1);
  }

  clampPan() {
    const box = this.root.getBoundingClientRect();
    const fit = this.fitScale();
    const limitX = Math.max(0, (this.natural.width * fit * this.zoom - box.width) / 2 + box.width * 0.25);
    const limitY = Math.max(0, (this.natural.height * fit * this.zoom - box.height) / 2 + box.height * 0.25);
    this.pan.x = Math.max(-limitX, Math.min(limitX, this.pan.x));
    this.pan.y = Math.max(-limitY, Math.min(limitY, this.pan.y));
  }

  /** Zooms by `factor` keeping the point `at` (relative to the viewer's centre) where it is. */
  zoomBy(factor, at = { x: 0, y: 0 }) {
    if (!this.natural.width) return;
    const zoom = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.zoom * factor));
    const ratio = zoom / this.zoom;
    this.pan.x = at.x - (at.x - this.pan.x) * ratio;
    this.pan.y = at.y - (at.y - this.pan.y) * ratio;
    this.zoom = zoom;
    if (zoom === MIN_ZOOM) this.pan = { x: 0, y: 0 };
    this.clampPan();
    this.layout();
  }

  zoomIn() { this.zoomBy(1.25); }

  zoomOut() { this.zoomBy(0.8); }

  reset() {
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.layout();
  }

  pointFromEvent(event) {
    const box = this.root.getBoundingClientRect();
    return { x: event.clientX - box.left - box.width / 2, y: event.clientY - box.top - box.height / 2 };
  }

  onWheel(event) {
    if (!this.natural.width) return;
    event.preventDefault();
    const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
    this.zoomBy(Math.exp(-delta * 0.0015), this.pointFromEvent(event));
  }

  onPointerDown(event) {
    if (event.button !== 0 || !this.natural.width) return;
    this.drag = { id: event.pointerId, x: event.clientX, y: event.clientY, pan: { ...this.pan } };
    this.root.setPointerCapture(event.pointerId);
    this.root.classList.add("dragging");
  }

  onPointerMove(event) {
    if (!this.drag || event.pointerId !== this.drag.id) return;
    this.pan = { x: this.drag.pan.x + event.clientX - this.drag.x, y: this.drag.pan.y + event.clientY - this.drag.y };
    this.clampPan();
    this.layout();
  }

  onPointerUp(event) {
    if (!this.drag || event.pointerId !== this.drag.id) return;
    this.drag = null;
    this.root.classList.remove("dragging");
  }

  /** Viewer keys shared by the pages: + and Shift+minus (or the keypad) zoom, r resets. True if handled. */
  handleKey(event) {
    const key = event.key;
    if (key === "+" || event.code === "NumpadAdd") {
      this.zoomIn();
      return true;
    }
    if (key === "_" || event.code === "NumpadSubtract") {
      this.zoomOut();
      return true;
    }
    if (key === "r" || key === "R") {
      this.reset();
      return true;
    }
    return false;
  }
}
