"""PNG plots for a training run: confusion matrix, per-class ROC, training curves, reliability diagram.

Figures are built with matplotlib's object API (no pyplot), which needs no GUI backend and keeps no global
state, so plotting is safe inside worker processes and threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from training.ml.calibration import reliability_curve

_logger = logging.getLogger(__name__)


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, *, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised heatmap (recall on the diagonal) annotated with counts.

    Args:
        matrix: (C, C) counts, rows true, columns predicted.
        classes: class codes.
        path: PNG destination.
        title: figure title.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    side = max(4.0, 0.6 * len(classes) + 2)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    axes.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(classes)), classes, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                axes.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    return _save(figure, path)


def plot_roc_curves(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    path: Path,
    *,
    title: str = "ROC (one vs rest)",
    per_class_auroc: Mapping[str, float | None] | None = None,
) -> Path:
    """One-vs-rest ROC curve for every class that has positives and negatives in `labels`.

    Args:
        labels: (N,) true class indices.
        probabilities: (N, C) probabilities.
        classes: class codes.
        path: PNG destination.
        title: figure title.
        per_class_auroc: AUROCs for the legend (from the metrics), else computed from the curve.
    """
    labels = np.asarray(labels)
    figure = Figure(figsize=(7, 6))
    axes = figure.subplots()
    # The default colour cycle has 10 colours; the taxonomy has 12 classes.
    colours = colormaps["tab20" if len(classes) > 10 else "tab10"].colors
    for index, code in enumerate(classes):
        positive = labels == index
        if not positive.any() or positive.all():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, index])
        auc = (per_class_auroc or {}).get(code)
        auc = float(np.trapezoid(tpr, fpr)) if auc is None else auc
        axes.plot(fpr, tpr, linewidth=1.2, color=colours[index % len(colours)], label=f"{code} ({auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right", title="class (AUROC)", title_fontsize=7)
    return _save(figure, path)


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Loss (train and validation) and validation macro-F1 per epoch, one line per model.

    Args:
        histories: model key -> per-epoch history rows (as `fit` records them).
        path: PNG destination.
    """
    figure = Figure(figsize=(11, 4))
    loss_axes, f1_axes = figure.subplots(1, 2)
    for key, rows in histories.items():
        epochs = [row["epoch"] for row in rows]
        line = loss_axes.plot(epochs, [row["train_loss"] for row in rows], marker="o", label=f"{key} train")[0]
        loss_axes.plot(
            epochs,
            [row["val_loss"] for row in rows],
            marker="o",
            linestyle="--",
            color=line.get_color(),
            label=f"{key} val",
        )
        f1_axes.plot(epochs, [row["val_macro_f1"] for row in rows], marker="o", color=line.get_color(), label=key)
    for axes in (loss_axes, f1_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.set_title("loss")
    loss_axes.legend(fontsize=7)
    f1_axes.set_xlabel("epoch")
    f1_axes.set_ylabel("macro-F1")
    f1_axes.set_title("validation macro-F1")
    f1_axes.set_ylim(0, 1)
    f1_axes.legend(fontsize=7)
    return _save(figure, path)


def plot_reliability(
    labels: np.ndarray,
    probabilities: np.ndarray,
    path: Path,
    *,
    calibrated_probabilities: np.ndarray | None = None,
    n_bins: int = 15,
    title: str = "Reliability",
) -> Path:
    """Accuracy against confidence per bin, before (and after) temperature scaling, with the diagonal.

    Args:
        labels: (N,) true class indices.
        probabilities: (N, C) uncalibrated probabilities.
        path: PNG destination.
        calibrated_probabilities: (N, C) after temperature scaling.
        n_bins: equal-width confidence bins.
        title: figure title.
    """
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8, label="perfect calibration")
    series = [("uncalibrated", probabilities)]
    if calibrated_probabilities is not None:
        series.append(("temperature-scaled", calibrated_probabilities))
    for name, probs in series:
        confidence, accuracy, counts = reliability_curve(probs, labels, n_bins=n_bins)
        filled = counts > 0
        axes.plot(confidence[filled], accuracy[filled], marker="o", label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path)
