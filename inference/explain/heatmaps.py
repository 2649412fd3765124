"""Grad-CAM overlays of stored images, cached in the media storage per model version, so a page reload neither
reloads weights nor recomputes the map; the cache of retired versions is pruned after an activation."""

from __future__ import annotations

import logging
import re
import threading

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotation.models import CellImage
from core.storage import storage_local_path, storage_tree_delete
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


def heatmap_cache_dir(*, model_version_id: int) -> str:
    """The storage folder holding every overlay cached for one model version."""
    return f"{HEATMAP_DIR}/model-{model_version_id}"


def heatmap_cache_path(*, image: CellImage, model_version: ModelVersion, class_code: str) -> str:
    """The storage name of the overlay of `image` for `class_code` by `model_version` (content-addressed by SHA-256)."""
    return f"{heatmap_cache_dir(model_version_id=model_version.pk)}/{image.sha256}-{class_code}.png"


def heatmap_cache_prune() -> int:
    """Delete the cached overlays of every version but the active one; returns how many files went.

    Run after an activation commits (see `inference.services.hooks`). Only the active version's overlays are ever
    served, so everything else is stale: the versions just retired, and any map a request for the old version
    finished writing after the previous prune. The active version is read here, after the commit, so its folder
    is never deleted.
    """
    try:
        folders, _files = default_storage.listdir(HEATMAP_DIR)
    except FileNotFoundError:
        return 0
    active = model_version_active()
    removed = 0
    for folder in sorted(folders):
        match = _HEATMAP_VERSION_DIR.fullmatch(folder)
        if match is None or (active is not None and int(match[1]) == active.pk):
            continue
        try:
            files = storage_tree_delete(prefix=f"{HEATMAP_DIR}/{folder}")
        except OSError as exc:  # a request writing into it right now; the next prune takes the rest
            _logger.warning("could not delete all of the heatmap cache %s: %s", folder, exc)
            continue
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
    name = heatmap_cache_path(image=image, model_version=version, class_code=class_code)
    try:
        with default_storage.open(name, "rb") as cached:
            return cached.read()
    except FileNotFoundError:
        pass
    ensemble = ensemble_get(model_version=version)
    png = heatmap_render(
        ensemble=ensemble, image=load_image(storage_local_path(name=image.file)), class_index=classes.index(class_code)
    )
    try:
        # Two requests for the same map may race: both write the same bytes under the same name.
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(png))
    except OSError as exc:  # the cache only saves time: a prune racing this write, or a full disk, costs no answer
        _logger.warning("heatmap of image %s not cached at %s: %s", image.pk, name, exc)
    return png


def heatmap_render(*, ensemble: Ensemble, image: Image.Image, class_index: int) -> bytes:
    """Grad-CAM overlay PNG, one at a time per process: the hooks go on the shared, cached models."""
    from training.ml.gradcam import gradcam_png  # captum takes about a second to import; only heatmaps need it

    with _gradcam_lock:
        return gradcam_png(ensemble, image, class_index)
