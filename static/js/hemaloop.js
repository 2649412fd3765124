// Shared helpers for the pages' modules: JSON API calls with the session's CSRF token, short-lived toasts,
// a persistent alert for messages the user must read, and the ready marker a page's module sets.

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return cookie("csrftoken") || (meta ? meta.content : "");
}

/** Calls the JSON API with the session cookie. Resolves to {status, ok, data}; rejects only on network errors. */
export async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (response.status !== 204) {
    const text = await response.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
  }
  return { status: response.status, ok: response.ok, data };
}

/** The server's own words for a refused request (DRF's "detail", or the first field error). */
export function errorMessage(result, fallback = "The server refused the request.") {
  if (result.status === 401 || result.status === 403) {
    return "Your session has ended or you lack the role for this. Reload the page and log in again.";
  }
  const data = result.data;
  if (data && typeof data === "object") {
    if (typeof data.detail === "string") return data.detail;
    for (const [field, errors] of Object.entries(data)) {
      const first = Array.isArray(errors) ? errors[0] : errors;
      if (first) return field === "non_field_errors" ? String(first) : `${field}: ${first}`;
    }
  }
  if (result.status >= 500) return `The server had a problem (HTTP ${result.status}). Try again in a moment.`;
  return fallback;
}

/** A toast stack: brief confirmations that fade out by themselves. */
export class Toasts {
  constructor(region) {
    this.region = region;
  }

  show(message, { kind = "info", timeout = 3200 } = {}) {
    const toast = document.createElement("div");
    toast.className = `toast ${kind}`;
    toast.setAttribute("role", "status");
    toast.textContent = message;
    this.region.append(toast);
    while (this.region.children.length > 3) this.region.firstElementChild.remove();
    window.setTimeout(() => toast.classList.add("leaving"), timeout);
    window.setTimeout(() => toast.remove(), timeout + 400);
    return toast;
  }
}

/** A message that stays until the next action clears it: refusals the user must not miss. */
export class Alert {
  constructor(element) {
    this.element = element;
  }

  show(message, kind = "warn") {
    this.element.className = `work-alert ${kind}`;
    this.element.textContent = message;
    this.element.hidden = false;
  }

  clear() {
    this.element.hidden = true;
    this.element.textContent = "";
  }
}

export function formatDateTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Briefly marks a button as pressed, so a hotkey gives the same feedback as a click. */
export function flash(button) {
  if (!button) return;
  button.classList.add("pressed");
  window.setTimeout(() => button.classList.remove("pressed"), 180);
}

/** Marks the page as wired up: modules run deferred, so browser tests wait for this before pressing a key. */
export function markReady() {
  document.documentElement.dataset.ready = "true";
}
