"""Decision support: the ACTIVE model's top classes for a stored image and its Grad-CAM overlay.

Shown to adjudicators, researchers and admins only, never to annotators (see `opinion_visible_to`). The loaded
ensemble is kept per process and model version, and heatmaps are cached on disk under MEDIA_ROOT, so a page
reload neither reloads weights nor recomputes the map.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils.http import urlencode
from PIL import Image

from annotation.models import Annotation, CellClass, CellImage, LabelStatus
from core.roles import Role, user_has_role
from inference.models import Prediction
from training.ml.ensemble import ENSEMBLE_FILE, Ensemble, load_ensemble
from training.ml.transforms import load_image
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)

TOP_K = 3
EXPLAIN_ROLES = (Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN)
HEATMAP_DIR = "explanations"
_HEATMAP_VERSION_DIR = re.compile(r"model-(\d+)")
_gradcam_lock = threading.Lock()


class NoActiveModel(Exception):
    """No model version is active yet, so there is no opinion to show."""

    message = "No active model yet: an admin activates a trained model version on the Training page."


class ExplanationUnavailable(Exception):
    """The active version's ensemble cannot be read (files missing or damaged); the message says which."""


@dataclass(frozen=True)
class ClassScore:
    code: str
    name: str
    probability: float

    @property
    def percent(self) -> str:
        # A string, so templates never localise the decimal point inside a CSS width.
        return f"{100 * self.probability:.1f}"


@dataclass(frozen=True)
class ModelOpinion:
    """The active version's calibrated top classes for one image, best first."""

    model_version_id: int
    model_version_name: str
    top: tuple[ClassScore, ...]
    # "stored": the Prediction written when the pool was scored; "computed": scored now, not stored.
    source: str

    @property
    def predicted(self) -> ClassScore:
        return self.top[0]


def model_version_name(version: ModelVersion) -> str:
    return f"Model version {version.pk}"


def opinion_visible_to(*, user, image: CellImage) -> bool:
    """Whether `user` may see the model's opinion on `image`.

    Adjudicators, researchers and admins may; annotators never. A user who holds a second role besides
    annotator still may not while the image waits for labels they have not given: the queue could hand it to
    them, and their label must stay blind to the model.
    """
    if not user_has_role(user, *EXPLAIN_ROLES):
        return False
    if user_has_role(user, Role.ANNOTATOR) and image.label_status == LabelStatus.NEEDS_LABELS:
        return Annotation.objects.filter(image=image, annotator=user, undone_at__isnull=True).exists()
    return True


# --- the ensemble, cached per process --------------------------------------------------------------


def _version_dir(version: ModelVersion) -> Path:
    # Where pool_score (inference.services) reads the version's ensemble from.
    return Path(settings.MEDIA_ROOT) / version.out_dir


@lru_cache(maxsize=2)  # the active version and the one it replaced; each holds two networks in memory
def _ensemble_load(out_dir: str) -> Ensemble:
    _logger.info("loading the ensemble from %s", out_dir)
    return load_ensemble(out_dir)


def ensemble_get(*, model_version: ModelVersion) -> Ensemble:
    """The version's loaded ensemble, from the per-process cache; ExplanationUnavailable if it cannot be read."""
    try:
        return _ensemble_load(str(_version_dir(model_version)))
    except Exception as exc:  # missing files, bad JSON, safetensors' and timm's own error types
        raise ExplanationUnavailable(
            f"{model_version_name(model_version)} cannot be loaded from {model_version.out_dir}: {exc}"
        ) from exc


def ensemble_cache_clear() -> None:
    _ensemble_load.cache_clear()
    _version_classes.cache_clear()


@lru_cache(maxsize=8)
def _version_classes(out_dir: str) -> tuple[str, ...]:
    # ensemble.json alone: a stored prediction can be shown without loading any weights.
    return tuple(json.loads((Path(out_dir) / ENSEMBLE_FILE).read_text(encoding="utf-8"))["classes"])


def version_classes(*, model_version: ModelVersion) -> tuple[str, ...]:
    """The version's class codes in output order (the order of Prediction.probabilities)."""
    try:
        return _version_classes(str(_version_dir(model_version)))
    except (OSError, ValueError, KeyError) as exc:
        raise ExplanationUnavailable(
            f"{model_version_name(model_version)} has no readable {ENSEMBLE_FILE} in {model_version.out_dir}: {exc}"
        ) from exc


# --- top classes ------------------------------------------------------------------------------------


def _active_version(model_version: ModelVersion | None) -> ModelVersion:
    version = model_version or model_version_active()
    if version is None:
        raise NoActiveModel(NoActiveModel.message)
    return version


def top_classes(*, probabilities, classes: tuple[str, ...], k: int = TOP_K) -> tuple[ClassScore, ...]:
    """The k most probable classes, best first (ties in class order), with their display names."""
    p = np.asarray(probabilities, dtype=np.float64)
    names = dict(CellClass.objects.filter(code__in=classes).values_list("code", "name"))
    order = sorted(range(len(classes)), key=lambda i: (-p[i], i))[:k]
    return tuple(
        ClassScore(code=classes[i], name=names.get(classes[i], classes[i]), probability=float(p[i])) for i in order
    )


def image_opinion(*, image: CellImage, model_version: ModelVersion | None = None) -> ModelOpinion:
    """The active (or given) version's top-3 classes for `image` with calibrated probabilities.

    Read from the version's stored Prediction when the pool has been scored; otherwise the image is scored
    now with the cached ensemble (and not stored: writing predictions is the scoring job's business).
    Raises NoActiveModel or ExplanationUnavailable.
    """
    version = _active_version(model_version)
    classes = version_classes(model_version=version)
    stored = Prediction.objects.filter(image=image, model_version=version).first()
    if stored is not None and len(stored.probabilities) == len(classes):
        probabilities, source = stored.probabilities, "stored"
    else:
        ensemble = ensemble_get(model_version=version)
        probabilities, source = ensemble.predict_proba([default_storage.path(image.file)])[0], "computed"
    return ModelOpinion(
        model_version_id=version.pk,
        model_version_name=model_version_name(version),
        top=top_classes(probabilities=probabilities, classes=classes),
        source=source,
    )


# --- Grad-CAM overlay, cached on disk ----------------------------------------------------------------


def heatmap_cache_dir(*, model_version_id: int) -> Path:
    """The folder holding every overlay cached for one model version."""
    return Path(settings.MEDIA_ROOT) / HEATMAP_DIR / f"model-{model_version_id}"


def heatmap_cache_path(*, image: CellImage, model_version: ModelVersion, class_code: str) -> Path:
    """Where the overlay of `image` for `class_code` by `model_version` is kept (content-addressed by SHA-256)."""
    return heatmap_cache_dir(model_version_id=model_version.pk) / f"{image.sha256}-{class_code}.png"


def heatmap_cache_prune() -> int:
    """Delete the cached overlays of every version but the active one; returns how many files went.

    Run after an activation commits (see `inference.services.inference_after_activation`). Only the active version's
    overlays are ever served, so everything else is stale: the versions just retired, and any map a request for
    the old version finished writing after the previous prune. The active version is read here, after the commit,
    so its folder is never deleted.
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

    Raises NoActiveModel, ExplanationUnavailable, or ValueError for a class the model does not know.
    """
    version = _active_version(model_version)
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


# --- what a page or the API shows --------------------------------------------------------------------


@dataclass(frozen=True)
class OpinionState:
    """The opinion, or why there is none: "ready", "no_model" or "unavailable" (with a message to show)."""

    state: str
    message: str
    opinion: ModelOpinion | None


def image_opinion_state(*, image: CellImage) -> OpinionState:
    """`image_opinion` for a page: a missing or unreadable model is a state to show, not an error."""
    try:
        return OpinionState(state="ready", message="", opinion=image_opinion(image=image))
    except NoActiveModel as exc:
        return OpinionState(state="no_model", message=str(exc), opinion=None)
    except ExplanationUnavailable as exc:
        _logger.warning("no model opinion for image %s: %s", image.pk, exc)
        return OpinionState(state="unavailable", message=str(exc), opinion=None)


def heatmap_url(*, image_id: int, opinion: ModelOpinion) -> str:
    """The overlay's URL for the opinion's top class. The version in the query makes a newly activated model a new
    URL, so a browser never shows a map it cached from the previous one."""
    query = urlencode({"class": opinion.predicted.code, "version": opinion.model_version_id})
    return f"{reverse('inference_api:image_gradcam', kwargs={'image_id': image_id})}?{query}"
