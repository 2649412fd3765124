"""A model version's ensemble, loaded once per process: the one loader behind scoring the pool, the prediction API
and the model's opinion (tests replace `ensemble_load` to score with a stand-in)."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from core.storage import storage_tree_local
from inference.errors import ModelUnavailable
from training.ml.ensemble import ENSEMBLE_FILE, Ensemble, load_ensemble
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
        return ensemble_load(str(version_dir(model_version)))
    except Exception as exc:  # missing files, bad JSON, safetensors' and timm's own error types
        raise ModelUnavailable(
            f"{model_version_name(model_version)} cannot be loaded from {model_version.out_dir}: {exc}"
        ) from exc


def ensemble_cache_clear() -> None:
    ensemble_load.cache_clear()
    _version_classes.cache_clear()


@lru_cache(maxsize=8)
def _version_classes(out_dir: str) -> tuple[str, ...]:
    # ensemble.json alone: a stored prediction can be shown without loading any weights.
    return tuple(json.loads((Path(out_dir) / ENSEMBLE_FILE).read_text(encoding="utf-8"))["classes"])


def version_classes(*, model_version: ModelVersion) -> tuple[str, ...]:
    """The version's class codes in output order (the order of Prediction.probabilities)."""
    try:
        return _version_classes(str(version_dir(model_version)))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"{model_version_name(model_version)} has no readable {ENSEMBLE_FILE} in {model_version.out_dir}: {exc}"
        ) from exc
