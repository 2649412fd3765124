// The image page's model opinion (rendered by the server): the heatmap toggle, by its button or the h key.
import { markReady } from "./hemaloop.js";
import { hasModifier, isTyping } from "./hotkeys.js";
import { ModelOpinion } from "./inference/model-opinion.js";

const opinion = new ModelOpinion(
  document.querySelector("[data-model-opinion]"),
  document.querySelector("[data-opinion-heatmap]"),
  document.querySelector("[data-detail-images]"),
);
document.addEventListener("keydown", (event) => {
  if (event.key === "h" && !isTyping(event) && !hasModifier(event) && opinion.toggle()) event.preventDefault();
});
markReady();
