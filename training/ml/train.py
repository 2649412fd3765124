"""Train, calibrate and evaluate the ensemble: `train_ensemble` for the platform, and a command line.

`train_ensemble` composes the steps: members.py trains, evaluation.py calibrates, evaluates and compares,
report.py writes the plots and metrics.json.

python -m training.ml.train --data DIR --out DIR [--profile quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.ml.config import (
    PRETRAINED_SOURCES,
    PROFILES,
    TAXONOMY_CODES,
    TrainConfig,
    config_for_profile,
    save_config,
)
from training.ml.data import Item, load_splits
from training.ml.ensemble import ENSEMBLE_FILE, MemberSpec, load_ensemble, write_ensemble_file
from training.ml.evaluation import ENSEMBLE_KEY, Calibration, calibrate, compare_models, evaluate_on_test, labels_of
from training.ml.loop import Callback, CallbackList, class_weights_for, resolve_device
from training.ml.members import TrainedMember, create_run_loaders, train_members
from training.ml.report import METRICS_FILE, PLOTS_DIR, write_metrics_file, write_plots
from training.ml.transforms import resolve_image_size

_logger = logging.getLogger(__name__)

__all__ = ["EnsembleResult", "load_ensemble", "main", "train_ensemble"]

CONFIG_FILE = "config.json"


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


def _check_items(name: str, items: Sequence[Item], num_classes: int) -> None:
    if not items:
        raise ValueError(f"the {name} split is empty")
    bad = [label for _, label in items if not 0 <= int(label) < num_classes]
    if bad:
        raise ValueError(f"the {name} split has label indices outside 0..{num_classes - 1}: {sorted(set(bad))[:5]}")


def _write_ensemble(
    out_dir: Path,
    *,
    classes: Sequence[str],
    image_size: tuple[int, int],
    members: Sequence[TrainedMember],
    weights: Sequence[float],
    calibration: Calibration,
    center_crop: float,
) -> Path:
    return write_ensemble_file(
        out_dir,
        classes=classes,
        image_size=image_size,
        center_crop=center_crop,
        temperature=calibration.temperature,
        members=[
            MemberSpec(
                name=m.name, checkpoint=m.checkpoint.name, weight=w, temperature=calibration.model_temperatures[m.key]
            )
            for m, w in zip(members, weights, strict=True)
        ],
    )


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
    split_sizes = {"train": len(train_items), "val": len(val_items), "test": len(test_items)}
    for name, items in (("train", train_items), ("val", val_items), ("test", test_items)):
        _check_items(name, items, len(classes))
    out_dir = Path(out_dir)
    (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    config_path = save_config(config, out_dir / CONFIG_FILE)
    device = resolve_device(config.device)
    size = resolve_image_size(config.image_size, [path for path, _ in train_items])
    _logger.info(
        "training %s on %s at %dx%d: %d train, %d val, %d test images",
        ", ".join(config.models),
        device,
        size[0],
        size[1],
        *split_sizes.values(),
    )

    loaders = create_run_loaders(
        config=config,
        device=device,
        image_size=size,
        train_items=train_items,
        val_items=val_items,
        test_items=test_items,
    )
    class_weights = class_weights_for(
        [label for _, label in train_items],
        len(classes),
        mode=config.class_weighting,
        imbalance_ratio=config.imbalance_ratio,
    )
    members = train_members(
        config=config,
        loaders=loaders,
        classes=classes,
        class_weights=class_weights,
        device=device,
        image_size=size,
        out_dir=out_dir,
        callbacks=CallbackList(callbacks),
    )
    keys = [m.key for m in members]
    weights = config.normalized_weights
    test_labels = labels_of(test_items)
    calibration = calibrate(members=members, val_labels=labels_of(val_items), weights=weights)
    evaluation = evaluate_on_test(
        members=members,
        calibration=calibration,
        weights=weights,
        test_labels=test_labels,
        classes=classes,
        bootstrap_samples=config.bootstrap_samples,
        ece_bins=config.ece_bins,
        seed=config.seed,
    )
    comparisons = compare_models(labels=test_labels, probabilities=evaluation.probabilities, keys=keys, classes=classes)
    histories = {m.key: m.history for m in members}
    plot_paths = write_plots(
        plots_dir=out_dir / PLOTS_DIR,
        histories=histories,
        evaluation=evaluation,
        test_labels=test_labels,
        classes=classes,
        ece_bins=config.ece_bins,
    )
    ensemble_path = _write_ensemble(
        out_dir,
        classes=classes,
        image_size=size,
        members=members,
        weights=weights,
        calibration=calibration,
        center_crop=config.center_crop,
    )
    seconds = time.perf_counter() - started
    metrics_path = write_metrics_file(
        out_dir / METRICS_FILE,
        config=config,
        classes=classes,
        image_size=size,
        device=str(device),
        seconds=seconds,
        split_sizes=split_sizes,
        members=members,
        weights=weights,
        calibration=calibration,
        evaluation=evaluation,
        comparisons=comparisons,
    )
    return EnsembleResult(
        classes=classes,
        model_keys=keys,
        model_metrics={key: evaluation.metrics[key] for key in keys},
        ensemble_metrics=evaluation.metrics[ENSEMBLE_KEY],
        temperature=calibration.temperature,
        model_temperatures=calibration.model_temperatures,
        comparisons=comparisons,
        checkpoint_paths={m.key: m.checkpoint for m in members},
        config_path=config_path,
        ensemble_path=ensemble_path,
        metrics_path=metrics_path,
        plot_paths=plot_paths,
        history=histories,
        best_epochs={m.key: m.best_epoch for m in members},
        image_size=size,
        seconds=seconds,
    )


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
    parser.add_argument("--frozen-blocks", type=int, help="freeze the stem and N leading stages (0: all)")
    parser.add_argument("--center-crop", type=float, help="keep this centred fraction of each side (1: all)")
    parser.add_argument(
        "--decode-once",
        action=argparse.BooleanOptionalAction,
        help="decode every image once into memory and augment there (default: the profile's)",
    )
    parser.add_argument("--pretrained", choices=list(PRETRAINED_SOURCES))
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
            "frozen_blocks",
            "decode_once",
            "center_crop",
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
