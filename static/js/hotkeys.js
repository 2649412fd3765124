// The taxonomy and hotkey helper of the labeling, consensus and image pages: the class names and keys the
// server passed with json_script, and what a key press means (never while the user types in a field).

export const UNCLASSIFIABLE = "unclassifiable";
const UNCLASSIFIABLE_KEY = "u";

/**
 * The active classes from the page's `taxonomy-data` script element.
 * @returns {{names: Object<string, string>, hotkeys: Map<string, string>}} code -> name, and key -> code
 *   (both with "Unclassifiable" on u)
 */
export function readTaxonomy(elementId = "taxonomy-data") {
  const taxonomy = JSON.parse(document.getElementById(elementId).textContent);
  const names = Object.fromEntries(taxonomy.map((c) => [c.code, c.name]));
  names[UNCLASSIFIABLE] = "Unclassifiable";
  const hotkeys = new Map(taxonomy.map((c) => [c.hotkey, c.code]));
  hotkeys.set(UNCLASSIFIABLE_KEY, UNCLASSIFIABLE);
  return { names, hotkeys };
}

/** True when a key press belongs to a text field (hotkeys must not fire while typing). */
export function isTyping(event) {
  const target = event.target;
  return Boolean(target && target.closest && target.closest("input, textarea, select, [contenteditable='true']"));
}

/** True for a key pressed with Alt, Ctrl or Meta: those belong to the browser, not to the page's hotkeys. */
export function hasModifier(event) {
  return event.altKey || event.ctrlKey || event.metaKey;
}

/** The key as the hotkey tables spell it: letters lower-cased (Caps Lock, Shift), named keys as they are. */
export function hotkeyOf(event) {
  return event.key.length === 1 ? event.key.toLowerCase() : event.key;
}
