"""A model version's ensemble, loaded once per process: the one loader behind scoring the pool, the prediction API
and the model's opinion (tests replace `ensemble_load` to score with a stand-in). A head version (a queue refresh's
light head on the embedding index) loads as a one-member ensemble: its backbone with the head as classifier, so
the model's opinion and Grad-CAM run through backbone and head."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from django.core.files.storage import default_storage

from core.storage import storage_tree_local
from inference.errors import ModelUnavailable
from training.ml.embedding import BackboneSpec, bundled_backbone, member_backbone
from training.ml.ensemble import ENSEMBLE_FILE, Ensemble, load_ensemble
from training.ml.heads import head_classifier, head_from_bytes
from training.ml.loop import resolve_device
from training.ml.models import CellClassifier
from training.models import ModelVersion

_logger = logging.getLogger(__name__)


def model_version_name(version: ModelVersion) -> str:
    return f"Model version {version.pk}"


def version_dir(version: ModelVersion) -> Path:
    """A local folder with the version's ensemble: its stored files, or this host's checked copy of them."""
    return storage_tree_local(prefix=version.out_dir)


@lru_cache(maxsize=2)  # the active version and the one it replaced; each holds two networks in memory
def ensemble_load(out_dir: str) -> Ensemble:
    """The ensemble saved in `out_dir`, read from disk on the first call of each process only."""
    _logger.info("loading the ensemble from %s", out_dir)
    return load_ensemble(out_dir)


def ensemble_get(*, model_version: ModelVersion) -> Ensemble:
    """The version's loaded ensemble, from the per-process cache; ModelUnavailable if it cannot be read."""
    try:
        if model_version.is_head:
            return head_ensemble_load(model_version.out_dir, json.dumps(model_version.config["backbone"]))
        return ensemble_load(str(version_dir(model_version)))
    except Exception as exc:  # missing files, bad JSON, safetensors' and timm's own error types
        raise ModelUnavailable(
            f"{model_version_name(model_version)} cannot be loaded from {model_version.out_dir}: {exc}"
        ) from exc


def backbone_get(*, spec: BackboneSpec) -> CellClassifier:
    """A fresh pooled-feature backbone for `spec` (callers may modify it): the bundled ImageNet network, or the
    member of a trained version's ensemble (loaded through the cache)."""
    if spec.source == "bundled":
        return bundled_backbone(spec.name)
    version = ModelVersion.objects.get(pk=spec.version_id)
    return member_backbone(ensemble_get(model_version=version).models[spec.member])


@lru_cache(maxsize=2)
def head_ensemble_load(head_file: str, backbone_json: str) -> Ensemble:
    """A head version as a one-member Ensemble: the backbone with the head as its classifier, the head's temperature."""
    _logger.info("loading the head %s", head_file)
    with default_storage.open(head_file, "rb") as handle:
        head, meta = head_from_bytes(handle.read())
    spec = BackboneSpec.from_dict(json.loads(backbone_json))
    return Ensemble(
        [head_classifier(backbone_get(spec=spec), head)],
        weights=[1.0],
        temperature=meta["temperature"],
        classes=meta["classes"],
        image_size=spec.image_size,
        device=resolve_device("auto"),
        center_crop=spec.crop,
    )


def version_ensemble_spec(*, model_version: ModelVersion) -> dict:
    """A fully trained version's ensemble.json (members, weights, image size), without loading any weights."""
    try:
        return json.loads((version_dir(model_version) / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"{model_version_name(model_version)} has no readable {ENSEMBLE_FILE} in {model_version.out_dir}: {exc}"
        ) from exc


def ensemble_cache_clear() -> None:
    ensemble_load.cache_clear()
    head_ensemble_load.cache_clear()
    _version_classes.cache_clear()


@lru_cache(maxsize=8)
def _version_classes(out_dir: str) -> tuple[str, ...]:
    # ensemble.json alone: a stored prediction can be shown without loading any weights.
    return tuple(json.loads((Path(out_dir) / ENSEMBLE_FILE).read_text(encoding="utf-8"))["classes"])


def version_classes(*, model_version: ModelVersion) -> tuple[str, ...]:
    """The version's class codes in output order (the order of Prediction.probabilities)."""
    if model_version.is_head:
        return tuple(model_version.config["classes"])
    try:
        return _version_classes(str(version_dir(model_version)))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"{model_version_name(model_version)} has no readable {ENSEMBLE_FILE} in {model_version.out_dir}: {exc}"
        ) from exc
