"""What a finished run reports: its plots and metrics.json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.ml.config import TrainConfig
from training.ml.evaluation import ENSEMBLE_KEY, Calibration, TestEvaluation
from training.ml.members import TrainedMember
from training.ml.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves, plot_training_curves

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"


def jsonable(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); paths become strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_plots(
    *,
    plots_dir: Path,
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    evaluation: TestEvaluation,
    test_labels: np.ndarray,
    classes: Sequence[str],
    ece_bins: int,
) -> dict[str, Path]:
    """Training curves, then a confusion matrix, ROC curves and a reliability diagram per member and ensemble.

    Args:
        plots_dir: existing folder the PNGs go to.
        histories: per-epoch history rows per member key.
        evaluation: test probabilities and metrics (see `evaluate_on_test`).
        test_labels: test class indices.
        classes: class codes.
        ece_bins: bins of the reliability diagrams.
    """
    paths = {"training_curves": plot_training_curves(histories, plots_dir / "training_curves.png")}
    for key, probabilities in evaluation.probabilities.items():
        metrics = evaluation.metrics[key]
        paths[f"confusion_{key}"] = plot_confusion_matrix(
            metrics["confusion_matrix"], classes, plots_dir / f"confusion_{key}.png", title=f"{key}: confusion matrix"
        )
        paths[f"roc_{key}"] = plot_roc_curves(
            test_labels,
            probabilities,
            classes,
            plots_dir / f"roc_{key}.png",
            title=f"{key}: ROC (one vs rest)",
            per_class_auroc={c: v["auroc"] for c, v in metrics["per_class"].items()},
        )
        paths[f"reliability_{key}"] = plot_reliability(
            test_labels,
            probabilities,
            plots_dir / f"reliability_{key}.png",
            calibrated_probabilities=evaluation.calibrated[key],
            n_bins=ece_bins,
            title=f"{key}: reliability (test)",
        )
    return paths


def write_metrics_file(
    path: Path,
    *,
    config: TrainConfig,
    classes: Sequence[str],
    image_size: tuple[int, int],
    device: str,
    seconds: float,
    split_sizes: Mapping[str, int],
    members: Sequence[TrainedMember],
    weights: Sequence[float],
    calibration: Calibration,
    evaluation: TestEvaluation,
    comparisons: Mapping[str, Any],
) -> Path:
    """Write metrics.json: the run, each member (test metrics, history), the ensemble and the comparisons.

    Args:
        path: the file to write.
        config: the run's settings, recorded whole.
        classes: class codes.
        image_size: (height, width).
        device: where the run trained.
        seconds: the run's duration so far.
        split_sizes: images per split.
        members: the trained members.
        weights: soft-voting weights, one per member.
        calibration: the fitted temperatures.
        evaluation: test metrics per member key and ENSEMBLE_KEY.
        comparisons: McNemar and DeLong results (see `compare_models`).
    """
    report = {
        "classes": list(classes),
        "image_size": list(image_size),
        "device": device,
        "seconds": seconds,
        "split_sizes": dict(split_sizes),
        "models": {
            m.key: {
                "name": m.name,
                "weight": w,
                "temperature": calibration.model_temperatures[m.key],
                "best_epoch": m.best_epoch,
                "checkpoint": m.checkpoint.name,
                "test": evaluation.metrics[m.key],
                "history": m.history,
            }
            for m, w in zip(members, weights, strict=True)
        },
        ENSEMBLE_KEY: {
            "weights": dict(zip([m.key for m in members], weights, strict=True)),
            "temperature": calibration.temperature,
            "test": evaluation.metrics[ENSEMBLE_KEY],
        },
        "comparisons": comparisons,
        "config": config.to_dict(),
    }
    path.write_text(json.dumps(jsonable(report), indent=2) + "\n", encoding="utf-8")
    return path
