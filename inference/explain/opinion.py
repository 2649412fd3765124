"""The ACTIVE (or a given) model version's calibrated top classes for one stored image, and the state a page shows
when there is none."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from annotation.models import CellClass, CellImage
from core.storage import storage_local_path
from inference.ensembles import ensemble_get, model_version_name, version_classes
from inference.errors import ModelUnavailable, NoActiveModel
from inference.models import Prediction
from training.models import ModelVersion
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)

TOP_K = 3


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


def version_or_active(model_version: ModelVersion | None) -> ModelVersion:
    """`model_version`, else the active one; NoActiveModel when there is none."""
    version = model_version or model_version_active()
    if version is None:
        raise NoActiveModel()
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
    Raises NoActiveModel or ModelUnavailable.
    """
    version = version_or_active(model_version)
    classes = version_classes(model_version=version)
    stored = Prediction.objects.filter(image=image, model_version=version).first()
    if stored is not None and len(stored.probabilities) == len(classes):
        probabilities, source = stored.probabilities, "stored"
    else:
        ensemble = ensemble_get(model_version=version)
        probabilities, source = ensemble.predict_proba([str(storage_local_path(name=image.file))])[0], "computed"
    return ModelOpinion(
        model_version_id=version.pk,
        model_version_name=model_version_name(version),
        top=top_classes(probabilities=probabilities, classes=classes),
        source=source,
    )


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
    except ModelUnavailable as exc:
        _logger.warning("no model opinion for image %s: %s", image.pk, exc)
        return OpinionState(state="unavailable", message=str(exc), opinion=None)
