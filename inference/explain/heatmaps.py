"""Grad-CAM overlays of stored images, cached on disk under MEDIA_ROOT per model version, so a page reload neither
reloads weights nor recomputes the map; the cache of retired versions is pruned after an activation."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from annotation.models import CellImage
from inference.ensembles import ensemble_get, version_classes
from inference.explain.opinion import image_opinion, version_or_active
from training.ml.ensemble import Ensemble
from training.ml.transforms import load_image
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)

HEATMAP_DIR = "explanations"
_HEATMAP_VERSION_DIR = re.compile(r"model-(\d+)")
_gradcam_lock = threading.Lock()


def heatmap_cache_dir(*, model_version_id: int) -> Path:
    """The folder holding every overlay cached for one model version."""
    return Path(settings.MEDIA_ROOT) / HEATMAP_DIR / f"model-{model_version_id}"


def heatmap_cache_path(*, image: CellImage, model_version: ModelVersion, class_code: str) -> Path:
    """Where the overlay of `image` for `class_code` by `model_version` is kept (content-addressed by SHA-256)."""
    return heatmap_cache_dir(model_version_id=model_version.pk) / f"{image.sha256}-{class_code}.png"


def heatmap_cache_prune() -> int:
    """Delete the cached overlays of every version but the active one; returns how many files went.

    Run after an activation commits (see `inference.services.hooks`). Only the active version's overlays are ever
    served, so everything else is stale: the versions just retired, and any map a request for the old version
    finished writing after the previous prune. The active version is read here, after the commit, so its folder
    is never deleted.
    """
    root = Path(settings.MEDIA_ROOT) / HEATMAP_DIR
    if not root.is_dir():
        return 0
    active = model_version_active()
    removed = 0
    for folder in sorted(root.iterdir()):
        match = _HEATMAP_VERSION_DIR.fullmatch(folder.name)
        if match is None or not folder.is_dir() or (active is not None and int(match[1]) == active.pk):
            continue
        files = sum(1 for path in folder.rglob("*") if path.is_file())
        try:
            shutil.rmtree(folder)
        except OSError as exc:  # a request writing into it right now; the next prune takes the rest
            _logger.warning("could not delete all of the heatmap cache %s: %s", folder, exc)
            files -= sum(1 for path in folder.rglob("*") if path.is_file())
        _logger.info("deleted %d cached heatmap(s) of model version %s (not active)", files, match[1])
        removed += files
    return removed


def image_heatmap_png(
    *, image: CellImage, class_code: str | None = None, model_version: ModelVersion | None = None
) -> bytes:
    """The Grad-CAM overlay PNG of `image` (its own size) for `class_code`, by default the predicted class.

    Raises NoActiveModel, ModelUnavailable, or ValueError for a class the model does not know.
    """
    version = version_or_active(model_version)
    classes = version_classes(model_version=version)
    if class_code is None:
        class_code = image_opinion(image=image, model_version=version).predicted.code
    if class_code not in classes:
        raise ValueError(f"Unknown class {class_code!r}; the model knows {', '.join(classes)}.")
    path = heatmap_cache_path(image=image, model_version=version, class_code=class_code)
    if path.is_file():
        return path.read_bytes()
    ensemble = ensemble_get(model_version=version)
    png = heatmap_render(
        ensemble=ensemble, image=load_image(default_storage.path(image.file)), class_index=classes.index(class_code)
    )
    try:
        _write_atomically(path, png)
    except OSError as exc:  # the cache only saves time: a prune racing this write, or a full disk, costs no answer
        _logger.warning("heatmap of image %s not cached at %s: %s", image.pk, path, exc)
    return png


def heatmap_render(*, ensemble: Ensemble, image: Image.Image, class_index: int) -> bytes:
    """Grad-CAM overlay PNG, one at a time per process: the hooks go on the shared, cached models."""
    from training.ml.gradcam import gradcam_png  # captum takes about a second to import; only heatmaps need it

    with _gradcam_lock:
        return gradcam_png(ensemble, image, class_index)


def _write_atomically(path: Path, data: bytes) -> None:
    # Two requests for the same map may race; each writes its own temp file and the rename is atomic.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
