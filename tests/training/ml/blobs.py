"""Tiny generated image sets for the ML package: a distinctly coloured blob per class on a smear-like background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Three of the taxonomy's classes, each a distinctly coloured blob on a smear-like background.
BLOB_COLOURS = {"neutrophil": (200, 60, 60), "eosinophil": (60, 190, 60), "basophil": (70, 70, 210)}
CLASSES = ["neutrophil", "eosinophil", "basophil", "monocyte"]  # monocyte: in the class list, never in the data


def blob_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 40) -> Image.Image:
    background = np.array([232, 214, 220])
    array = np.broadcast_to(background, (size, size, 3)).astype(np.int64)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    radius = size // 4
    array = array.copy()
    array[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = colour
    array += rng.integers(-12, 12, array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def write_blob_folder(root: Path, per_class: int = 8, *, seed: int = 0, suffix: str = ".png") -> Path:
    """`<label>/<i>.png` for the three blob classes."""
    rng = np.random.default_rng(seed)
    for label, colour in BLOB_COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            blob_image(colour, rng).save(root / label / f"{label}_{i}{suffix}")
    return root
