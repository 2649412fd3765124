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

/**
 * Sends key presses to `handler`, holding those made before `release()` and replaying them then, in order: a
 * key pressed while the page's first cell is still loading is kept, not dropped. Keys typed into a field go
 * straight through; auto-repeats made while holding are dropped.
 * @returns {{release: function(): void}}
 */
export function holdKeys(handler) {
  let held = [];
  document.addEventListener("keydown", (event) => {
    if (held === null || isTyping(event)) {
      handler(event);
    } else if (!event.repeat) {
      event.preventDefault();
      held.push(event);
    }
  });
  return {
    /** Applies the held keys in order: for a page whose cell was already on screen when they were pressed. */
    release() {
      if (held === null) return;
      const queued = held;
      held = null;
      for (const event of queued) handler(event);
    },
    /** Forgets the held keys and returns how many there were: for a page whose cell was not yet on screen, where
     * a class key would label a cell nobody had looked at. */
    discard() {
      const count = held === null ? 0 : held.length;
      held = null;
      return count;
    },
  };
}
