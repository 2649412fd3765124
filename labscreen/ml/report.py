"""A study's files: the figures as JSON and CSV (one CSV per figure, so every plot's numbers can be downloaded), the
plots as PNG (matplotlib's object API, no pyplot: safe in worker processes), and the screen model (joblib)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import joblib
import numpy as np
from matplotlib.figure import Figure

from labscreen.ml.study import METRICS, VARIANT_LABELS, VARIANTS, StudyOutput

_logger = logging.getLogger(__name__)

SYNTHETIC_NOTE = "SYNTHETIC DATA: generated cohort, not patients"
# name -> (file, what it holds), in the order the study page lists them.
FILES = {
    "study": ("study.json", "every figure of the study"),
    "summary": ("summary.csv", "mean ± SD per model, metric and variant, with the difference"),
    "folds": ("folds.csv", "every fold's metrics"),
    "correlations": ("correlations.csv", "point-biserial ranking (r, p)"),
    "roc": ("roc.csv", "ROC curve points per model and variant"),
    "calibration": ("calibration.csv", "reliability diagram of the screen model"),
    "importance": ("importance.csv", "permutation importance of the best model"),
    "roc_published": ("roc_published.png", "ROC curves, as published"),
    "roc_leak_free": ("roc_leak_free.png", "ROC curves, leak-free"),
    "metrics": ("metrics.png", "per-model bar chart with SD error bars"),
    "correlations_plot": ("correlations.png", "correlation ranking"),
    "calibration_plot": ("calibration.png", "calibration plot"),
    "model": ("model.joblib", "the screen model (scikit-learn pipeline)"),
}


def _csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _save(figure: Figure, path: Path, *, synthetic: bool) -> None:
    if synthetic:
        figure.text(0.99, 0.01, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=8, color="#b00020")
    figure.savefig(path, dpi=100, bbox_inches="tight")


def write_study_outputs(output: StudyOutput, out_dir: Path) -> dict[str, Path]:
    """Every file of FILES that the study has, under `out_dir`; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = output.results
    synthetic = results["cohort"]["synthetic"]
    paths = {name: out_dir / file for name, (file, _) in FILES.items()}
    paths["study"].write_text(json.dumps(results, indent=1, allow_nan=False, default=_json_default), encoding="utf-8")
    variants = results["variants"]
    models = list(variants["leak_free"])
    _csv(
        paths["summary"],
        ["model", "metric", "published_mean", "published_sd", "leak_free_mean", "leak_free_sd", "difference"],
        [
            [
                name,
                metric,
                variants["published"][name]["mean"][metric],
                variants["published"][name]["sd"][metric],
                variants["leak_free"][name]["mean"][metric],
                variants["leak_free"][name]["sd"][metric],
                results["difference"][name][metric],
            ]
            for name in models
            for metric in METRICS
        ],
    )
    _csv(
        paths["folds"],
        ["variant", "model", "fold", *METRICS],
        [
            [variant, name, i + 1, *(fold[m] for m in METRICS)]
            for variant in VARIANTS
            for name in models
            for i, fold in enumerate(variants[variant][name]["folds"])
        ],
    )
    _csv(
        paths["correlations"],
        ["rank", "variable", "r", "p", "selected_as_published", "leak_free_folds"],
        [
            [c["rank"], c["variable"], c["r"], c["p"], int(c["selected"]), c["leak_free_folds"]]
            for c in results["correlations"]
        ],
    )
    _csv(
        paths["roc"],
        ["variant", "model", "fpr", "tpr"],
        [
            [variant, name, f, t]
            for variant in VARIANTS
            for name in models
            for f, t in zip(variants[variant][name]["roc"]["fpr"], variants[variant][name]["roc"]["tpr"], strict=True)
        ],
    )
    calibration = results["calibration"] or {"bins": [], "model": ""}
    _csv(
        paths["calibration"],
        ["model", "low", "high", "predicted", "observed", "count"],
        [
            [calibration["model"], b["low"], b["high"], b["predicted"], b["observed"], b["count"]]
            for b in calibration["bins"]
        ],
    )
    _csv(
        paths["importance"],
        ["variable", "mean_auc_drop", "sd", "folds"],
        [[row["variable"], row["mean"], row["sd"], row["folds"]] for row in results["importance"]],
    )
    for variant in VARIANTS:
        _plot_roc(
            variants[variant],
            paths[f"roc_{variant}"],
            title=f"ROC, {VARIANT_LABELS[variant].lower()}",
            synthetic=synthetic,
        )
    _plot_metrics(variants, paths["metrics"], synthetic=synthetic)
    _plot_correlations(results["correlations"], paths["correlations_plot"], synthetic=synthetic)
    if results["calibration"]:
        _plot_calibration(results["calibration"], paths["calibration_plot"], synthetic=synthetic)
    else:
        paths.pop("calibration_plot")
    if output.screen_model is not None:
        joblib.dump(output.screen_model, paths["model"])
    else:
        paths.pop("model")
    return paths


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _plot_roc(models: dict, path: Path, *, title: str, synthetic: bool) -> None:
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    for data in models.values():
        label = f"{data['label']} (AUC {data['mean']['auc']:.3f} ± {data['sd']['auc']:.3f})"
        axes.plot(data["roc"]["fpr"], data["roc"]["tpr"], label=label, linewidth=1.4)
    axes.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=0.8)
    axes.set_xlabel("1 − specificity")
    axes.set_ylabel("sensitivity")
    axes.set_title(f"{title} (pooled out-of-fold scores)")
    axes.legend(fontsize=7, loc="lower right")
    _save(figure, path, synthetic=synthetic)


def _plot_metrics(variants: dict, path: Path, *, synthetic: bool) -> None:
    models = list(variants["leak_free"])
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, len(METRICS), sharey=True)
    positions = np.arange(len(models))
    for axis, metric in zip(axes, METRICS, strict=True):
        for offset, variant, colour in ((-0.2, "published", "#e39b3a"), (0.2, "leak_free", "#2a7f9e")):
            means = [variants[variant][m]["mean"][metric] for m in models]
            sds = [variants[variant][m]["sd"][metric] for m in models]
            axis.bar(positions + offset, means, 0.4, yerr=sds, capsize=2, color=colour, label=VARIANT_LABELS[variant])
        axis.set_xticks(
            positions, [variants["leak_free"][m]["label"].split(" (")[0] for m in models], rotation=70, fontsize=7
        )
        axis.set_title(metric)
        axis.set_ylim(0, 1.05)
    axes[0].legend(fontsize=7, loc="lower left")
    _save(figure, path, synthetic=synthetic)


def _plot_correlations(correlations: list[dict], path: Path, *, synthetic: bool, top: int = 30) -> None:
    shown = correlations[:top]
    figure = Figure(figsize=(6, 0.22 * len(shown) + 1.2))
    axes = figure.subplots()
    colours = ["#2a7f9e" if c["selected"] else "#b8c2cc" for c in shown]
    axes.barh(range(len(shown)), [abs(c["r"]) for c in shown], color=colours)
    axes.set_yticks(range(len(shown)), [c["variable"] for c in shown], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("|point-biserial r| with malignancy (all cases, as published; dark: kept)")
    _save(figure, path, synthetic=synthetic)


def _plot_calibration(calibration: dict, path: Path, *, synthetic: bool) -> None:
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    bins = calibration["bins"]
    axes.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=0.8)
    axes.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", color="#2a7f9e")
    axes.set_xlabel("predicted probability (out of fold)")
    axes.set_ylabel("observed share malignant")
    axes.set_title(f"Calibration: {calibration['model']} (Brier {calibration['brier']:.3f})", fontsize=9)
    _save(figure, path, synthetic=synthetic)
