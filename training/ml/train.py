"""Train, calibrate and evaluate the ensemble: `train_ensemble` for the platform, and a command line.

python -m training.ml.train --data DIR --out DIR [--profile quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.ml.calibration import apply_temperature, fit_temperature, probabilities_to_logits, softmax
from training.ml.config import PROFILES, TAXONOMY_CODES, TrainConfig, config_for_profile, save_config
from training.ml.data import Item, create_loader, default_num_workers, load_splits
from training.ml.ensemble import (
    ENSEMBLE_FILE,
    MemberSpec,
    ensemble_logits,
    load_ensemble,
    soft_vote,
    write_ensemble_file,
)
from training.ml.loop import (
    Callback,
    CallbackList,
    class_weights_for,
    fit,
    predict_logits,
    resolve_device,
    use_channels_last,
)
from training.ml.metrics import classification_metrics
from training.ml.models import create_classifier
from training.ml.plots import plot_confusion_matrix, plot_reliability, plot_roc_curves, plot_training_curves
from training.ml.stats import delong_per_class, mcnemar_test
from training.ml.transforms import build_transform, resolve_image_size

_logger = logging.getLogger(__name__)

__all__ = ["EnsembleResult", "load_ensemble", "main", "train_ensemble"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ENSEMBLE_KEY = "ensemble"


@dataclass
class EnsembleResult:
    """What a finished run produced; every path is inside the run's output folder."""

    classes: list[str]
    model_keys: list[str]
    model_metrics: dict[str, dict[str, Any]]
    ensemble_metrics: dict[str, Any]
    temperature: float
    model_temperatures: dict[str, float]
    comparisons: dict[str, Any]
    checkpoint_paths: dict[str, Path]
    config_path: Path
    ensemble_path: Path
    metrics_path: Path
    plot_paths: dict[str, Path]
    history: dict[str, list[dict[str, Any]]]
    best_epochs: dict[str, int]
    image_size: tuple[int, int]
    seconds: float = field(default=0.0)


def _model_keys(names: Sequence[str]) -> list[str]:
    # Metrics are keyed by model name; the same architecture twice gets its position appended.
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may still draw from the legacy global RNG
    torch.manual_seed(seed)


def _check_items(name: str, items: Sequence[Item], num_classes: int) -> None:
    if not items:
        raise ValueError(f"the {name} split is empty")
    bad = [label for _, label in items if not 0 <= int(label) < num_classes]
    if bad:
        raise ValueError(f"the {name} split has label indices outside 0..{num_classes - 1}: {sorted(set(bad))[:5]}")


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither); paths become strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def train_ensemble(
    *,
    config: TrainConfig,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    test_items: Sequence[Item],
    classes: Sequence[str],
    out_dir: str | Path,
    callbacks: Iterable[Any] = (),
) -> EnsembleResult:
    """Train every configured model, keep each one's best epoch, calibrate and evaluate the soft-voting ensemble.

    Writes into `out_dir`: config.json, one `model<i>_<name>.safetensors` per member, ensemble.json (read by
    `load_ensemble`), metrics.json (test metrics of each member and of the ensemble, McNemar and per-class
    DeLong comparisons, histories) and plots/*.png.

    Args:
        config: the run's settings (see `config_for_profile`).
        train_items: (image path, class index) pairs for training (augmented).
        val_items: pairs for early stopping, the learning-rate schedule and temperature fitting.
        test_items: pairs for the reported metrics.
        classes: class codes; index i of an item's label is classes[i]. Fixes the heads' output order.
        out_dir: output folder (created).
        callbacks: progress and cancellation (see `training.ml.loop.TrainingCallback`). A cancelled run
            raises `TrainingCancelled` and leaves no ensemble.json.
    """
    started = time.perf_counter()
    classes = list(classes)
    for name, items in (("train", train_items), ("val", val_items), ("test", test_items)):
        _check_items(name, items, len(classes))
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    config_path = save_config(config, out_dir / CONFIG_FILE)
    device = resolve_device(config.device)
    size = resolve_image_size(config.image_size, [path for path, _ in train_items])
    _logger.info(
        "training %s on %s at %dx%d: %d train, %d val, %d test images",
        ", ".join(config.models),
        device,
        size[0],
        size[1],
        len(train_items),
        len(val_items),
        len(test_items),
    )
    callback_list = CallbackList(callbacks)
    channels_last = use_channels_last(config, device)
    workers = default_num_workers(device.type) if config.num_workers is None else config.num_workers
    loader_options = {"num_workers": workers, "seed": config.seed, "pin_memory": device.type == "cuda"}
    train_transform = build_transform(
        size,
        train=True,
        augment=config.augment,
        rotation_degrees=config.rotation_degrees,
        hflip=config.hflip,
        vflip=config.vflip,
    )
    eval_transform = build_transform(size, train=False)
    train_loader = create_loader(
        train_items, transform=train_transform, batch_size=config.batch_size, shuffle=True, **loader_options
    )
    val_loader = create_loader(
        val_items, transform=eval_transform, batch_size=config.eval_batch_size, shuffle=False, **loader_options
    )
    test_loader = create_loader(
        test_items, transform=eval_transform, batch_size=config.eval_batch_size, shuffle=False, **loader_options
    )
    class_weights = class_weights_for(
        [label for _, label in train_items],
        len(classes),
        mode=config.class_weighting,
        imbalance_ratio=config.imbalance_ratio,
    )

    keys = _model_keys(list(config.models))
    val_logits: dict[str, np.ndarray] = {}
    test_logits: dict[str, np.ndarray] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    best_epochs: dict[str, int] = {}
    checkpoints: dict[str, Path] = {}
    val_labels = np.asarray([label for _, label in val_items], dtype=np.int64)
    test_labels = np.asarray([label for _, label in test_items], dtype=np.int64)
    for index, (key, name) in enumerate(zip(keys, config.models, strict=True)):
        callback_list.on_model_start(index, name)
        _seed_everything(config.seed + index)
        model = create_classifier(name, len(classes), pretrained=config.pretrained, weights_dir=config.weights_dir)
        checkpoint = out_dir / f"model{index}_{name}.safetensors"
        result = fit(
            model,
            train_loader=train_loader,
            val_loader=val_loader,
            config=config,
            device=device,
            checkpoint_path=checkpoint,
            classes=classes,
            class_weights=class_weights,
            callbacks=callback_list,
            model_index=index,
            checkpoint_metadata={"model_key": key, "image_size": list(size), "config": config.to_dict()},
        )
        histories[key] = result.history
        best_epochs[key] = result.best_epoch
        checkpoints[key] = checkpoint
        val_logits[key] = result.best_evaluation.logits
        test_logits[key], _ = predict_logits(
            model, test_loader, device=device, mixed_precision=config.mixed_precision, channels_last=channels_last
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    weights = config.normalized_weights
    val_probs = {key: softmax(val_logits[key]) for key in keys}
    test_probs = {key: softmax(test_logits[key]) for key in keys}
    model_temperatures = {key: fit_temperature(val_logits[key], val_labels) for key in keys}
    temperature = fit_temperature(ensemble_logits([val_probs[k] for k in keys], weights), val_labels)
    ensemble_test = soft_vote([test_probs[k] for k in keys], weights)
    ensemble_test_calibrated = apply_temperature(probabilities_to_logits(ensemble_test), temperature)
    _logger.info(
        "temperatures: ensemble %.3f, members %s",
        temperature,
        ", ".join(f"{k} {t:.3f}" for k, t in model_temperatures.items()),
    )

    metric_options = {"bootstrap_samples": config.bootstrap_samples, "ece_bins": config.ece_bins, "seed": config.seed}
    model_metrics = {
        key: classification_metrics(
            test_labels,
            test_probs[key],
            classes,
            calibrated_probabilities=apply_temperature(test_logits[key], model_temperatures[key]),
            **metric_options,
        )
        for key in keys
    }
    ensemble_metrics = classification_metrics(
        test_labels, ensemble_test, classes, calibrated_probabilities=ensemble_test_calibrated, **metric_options
    )
    comparisons = _comparisons(test_labels, {ENSEMBLE_KEY: ensemble_test, **test_probs}, keys, classes)

    plots_dir = out_dir / "plots"
    plot_paths = {"training_curves": plot_training_curves(histories, plots_dir / "training_curves.png")}
    for key, probs, metrics, calibrated in [
        *[(k, test_probs[k], model_metrics[k], apply_temperature(test_logits[k], model_temperatures[k])) for k in keys],
        (ENSEMBLE_KEY, ensemble_test, ensemble_metrics, ensemble_test_calibrated),
    ]:
        plot_paths[f"confusion_{key}"] = plot_confusion_matrix(
            metrics["confusion_matrix"], classes, plots_dir / f"confusion_{key}.png", title=f"{key}: confusion matrix"
        )
        plot_paths[f"roc_{key}"] = plot_roc_curves(
            test_labels,
            probs,
            classes,
            plots_dir / f"roc_{key}.png",
            title=f"{key}: ROC (one vs rest)",
            per_class_auroc={c: v["auroc"] for c, v in metrics["per_class"].items()},
        )
        plot_paths[f"reliability_{key}"] = plot_reliability(
            test_labels,
            probs,
            plots_dir / f"reliability_{key}.png",
            calibrated_probabilities=calibrated,
            n_bins=config.ece_bins,
            title=f"{key}: reliability (test)",
        )

    ensemble_path = write_ensemble_file(
        out_dir,
        classes=classes,
        image_size=size,
        temperature=temperature,
        members=[
            MemberSpec(name=name, checkpoint=checkpoints[key].name, weight=w, temperature=model_temperatures[key])
            for key, name, w in zip(keys, config.models, weights, strict=True)
        ],
    )
    seconds = time.perf_counter() - started
    metrics_path = out_dir / METRICS_FILE
    metrics_path.write_text(
        json.dumps(
            _jsonable(
                {
                    "classes": classes,
                    "image_size": list(size),
                    "device": str(device),
                    "seconds": seconds,
                    "split_sizes": {"train": len(train_items), "val": len(val_items), "test": len(test_items)},
                    "models": {
                        key: {
                            "name": name,
                            "weight": w,
                            "temperature": model_temperatures[key],
                            "best_epoch": best_epochs[key],
                            "checkpoint": checkpoints[key].name,
                            "test": model_metrics[key],
                            "history": histories[key],
                        }
                        for key, name, w in zip(keys, config.models, weights, strict=True)
                    },
                    ENSEMBLE_KEY: {
                        "weights": dict(zip(keys, weights, strict=True)),
                        "temperature": temperature,
                        "test": ensemble_metrics,
                    },
                    "comparisons": comparisons,
                    "config": config.to_dict(),
                }
            ),
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return EnsembleResult(
        classes=classes,
        model_keys=keys,
        model_metrics=model_metrics,
        ensemble_metrics=ensemble_metrics,
        temperature=temperature,
        model_temperatures=model_temperatures,
        comparisons=comparisons,
        checkpoint_paths=checkpoints,
        config_path=config_path,
        ensemble_path=ensemble_path,
        metrics_path=metrics_path,
        plot_paths=plot_paths,
        history=histories,
        best_epochs=best_epochs,
        image_size=size,
        seconds=seconds,
    )


def _comparisons(
    labels: np.ndarray, probabilities: dict[str, np.ndarray], keys: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """McNemar (accuracy) and per-class DeLong (AUROC): the ensemble against each member, and member pairs."""
    pairs = [(ENSEMBLE_KEY, key) for key in keys] + [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    correct = {key: probs.argmax(axis=1) == labels for key, probs in probabilities.items()}
    return {
        "mcnemar": {f"{a}_vs_{b}": mcnemar_test(correct[a], correct[b]).to_dict() for a, b in pairs},
        "delong": {
            f"{a}_vs_{b}": delong_per_class(labels, probabilities[a], probabilities[b], classes) for a, b in pairs
        },
    }


class ConsoleProgress(Callback):
    """Prints the command line's progress: a line per tenth of an epoch and a line per epoch."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.model = ""

    def on_model_start(self, index: int, name: str) -> None:
        self.model = name
        print(f"== model {index + 1}: {name}", file=self.stream, flush=True)

    def on_batch_end(self, step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 10) == 0:
            print(f"   batch {step}/{total} loss {loss:.4f}", file=self.stream, flush=True)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        print(
            f"   {self.model} epoch {epoch}/{metrics['max_epochs']}: train loss {metrics['train_loss']:.4f}, "
            f"val loss {metrics['val_loss']:.4f}, val acc {metrics['val_accuracy']:.4f}, "
            f"val macro-F1 {metrics['val_macro_f1']:.4f}, lr {metrics['lr']:.2g}, {metrics['seconds']:.1f}s"
            + (" *best*" if metrics["improved"] else ""),
            file=self.stream,
            flush=True,
        )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.ml.train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="release archive folder (manifest.csv), a manifest CSV, or an ImageFolder tree",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoints, metrics, plots")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--classes", help="comma-separated class codes (default: the 12 taxonomy codes)")
    parser.add_argument("--models", help="comma-separated timm model names")
    parser.add_argument("--ensemble-weights", help="comma-separated soft-voting weights, one per model")
    parser.add_argument("--image-size", help="pixels per side, or 'native'")
    parser.add_argument("--epochs", type=int, dest="max_epochs")
    parser.add_argument("--patience", type=int, dest="early_stopping_patience")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--pretrained", choices=["none", "timm", "local"])
    parser.add_argument("--weights-dir", help="folder of <model>.safetensors ImageNet weights (--pretrained local)")
    parser.add_argument("--class-weighting", choices=["off", "on", "auto"])
    parser.add_argument("--no-augment", action="store_const", const=False, dest="augment")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, dest="num_workers")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--val-fraction", type=float, default=0.15, help="when the data has no split")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="when the data has no split")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings in the log")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "max_epochs",
            "early_stopping_patience",
            "batch_size",
            "lr",
            "pretrained",
            "weights_dir",
            "class_weighting",
            "augment",
            "device",
            "num_workers",
            "seed",
            "image_size",
        )
        if getattr(args, key) is not None
    }
    if args.models:
        overrides["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
        if not args.ensemble_weights:
            overrides["ensemble_weights"] = (1.0,) * len(overrides["models"])
    if args.ensemble_weights:
        overrides["ensemble_weights"] = tuple(float(w) for w in args.ensemble_weights.split(","))
    config = config_for_profile(args.profile, **overrides)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else list(TAXONOMY_CODES)
    splits = load_splits(
        args.data, classes, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=config.seed
    )
    print(
        f"data: {args.data} -> train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)} images; "
        f"profile {config.profile}: {', '.join(config.models)} at {config.image_size}px",
        flush=True,
    )
    result = train_ensemble(
        config=config,
        train_items=splits.train,
        val_items=splits.val,
        test_items=splits.test,
        classes=classes,
        out_dir=args.out,
        callbacks=[ConsoleProgress()],
    )
    for key in [*result.model_keys, ENSEMBLE_KEY]:
        metrics = result.ensemble_metrics if key == ENSEMBLE_KEY else result.model_metrics[key]
        print(
            f"{key}: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"ECE {metrics['ece']:.4f} -> {metrics['ece_calibrated']:.4f}",
            flush=True,
        )
    print(f"wrote {result.metrics_path}, {args.out / ENSEMBLE_FILE} and {len(result.plot_paths)} plots", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
