"""Datasets: manifest CSVs and ImageFolder trees become (path, class index) items; items become DataLoaders."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.ml.transforms import CellTransform, load_image

_logger = logging.getLogger(__name__)

Item = tuple[str, int]  # (image path, index into the caller's class list)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test items over a fixed class list."""

    classes: tuple[str, ...]
    train: list[Item]
    val: list[Item]
    test: list[Item]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, for logs and metrics.json."""
        result = {}
        for split in SPLITS:
            per_class = np.bincount([label for _, label in getattr(self, split)], minlength=len(self.classes))
            result[split] = {code: int(n) for code, n in zip(self.classes, per_class, strict=True) if n}
        return result


def stratified_split(
    items: Sequence[Item], *, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42
) -> tuple[list[Item], list[Item], list[Item]]:
    """Split items per class into train/val/test, deterministically for a given seed.

    Classes are shuffled independently (seeded by class index), so adding images of one class never moves
    images of another between splits. A class with at least three images gets at least one in val and test.

    Args:
        items: (path, label) pairs in any order.
        val_fraction: share of each class for validation.
        test_fraction: share of each class for testing.
        seed: shuffling seed.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be >= 0 and sum to less than 1")
    by_class: dict[int, list[Item]] = defaultdict(list)
    for path, label in sorted(items):
        by_class[label].append((path, label))
    train: list[Item] = []
    val: list[Item] = []
    test: list[Item] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = np.random.default_rng([seed, label]).permutation(len(members))
        n = len(members)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if n >= 3:
            n_test, n_val = max(n_test, 1 if test_fraction else 0), max(n_val, 1 if val_fraction else 0)
        n_test = min(n_test, max(n - 1, 0))
        n_val = min(n_val, max(n - 1 - n_test, 0))
        shuffled = [members[i] for i in order]
        test += shuffled[:n_test]
        val += shuffled[n_test : n_test + n_val]
        train += shuffled[n_test + n_val :]
    return train, val, test


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    if len(set(classes)) != len(classes):
        raise ValueError("the class list has duplicates")
    return {code: index for index, code in enumerate(classes)}


def _check_labels(labels: set[str], index: Mapping[str, int], source: object) -> None:
    unknown = sorted(labels - set(index))
    if unknown:
        raise ValueError(f"{source}: labels not in the class list: {', '.join(unknown)}")


def read_manifest(
    manifest: str | Path,
    classes: Sequence[str],
    *,
    root: str | Path | None = None,
    resolve: Callable[[dict[str, str]], str | Path] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> DatasetSplits:
    """Read a dataset manifest CSV into splits.

    Each row needs `label`; its file is `resolve(row)` when given, else `root / row["path"]` when the CSV has
    a `path` column, else the release-archive layout `root/images/<split>/<label>/<sha256>.<ext>`. Without a
    `split` column the rows are split by `stratified_split`.

    Args:
        manifest: the CSV file.
        classes: the class codes, in the order that fixes label indices.
        root: base folder for relative paths; defaults to the manifest's folder.
        resolve: maps a row (a dict of strings) to its image path, for storage the layout does not describe.
        val_fraction: validation share when the manifest has no split column.
        test_fraction: test share when the manifest has no split column.
        seed: split seed when the manifest has no split column.
    """
    manifest = Path(manifest)
    base = Path(root) if root is not None else manifest.parent
    index = _class_index(classes)
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{manifest}: no rows")
    columns = set(rows[0])
    if "label" not in columns:
        raise ValueError(f"{manifest}: no 'label' column (columns: {', '.join(sorted(columns))})")
    has_split = "split" in columns
    if resolve is None and "path" not in columns and not {"sha256", "ext", "split"} <= columns:
        raise ValueError(f"{manifest}: need a 'path' column, or sha256, ext and split columns, or a resolve()")
    _check_labels({row["label"] for row in rows}, index, manifest)

    def locate(row: dict[str, str]) -> str:
        if resolve is not None:
            return str(resolve(row))
        if "path" in row and row["path"]:
            return str(base / row["path"])
        ext = row["ext"].lstrip(".")
        return str(base / "images" / row["split"] / row["label"] / f"{row['sha256']}.{ext}")

    if not has_split:
        items = [(locate(row), index[row["label"]]) for row in rows]
        return DatasetSplits(
            tuple(classes), *stratified_split(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        )
    by_split: dict[str, list[Item]] = {split: [] for split in SPLITS}
    for row in rows:
        split = _SPLIT_ALIASES.get(row["split"].strip().lower())
        if split is None:
            raise ValueError(f"{manifest}: unknown split {row['split']!r}")
        by_split[split].append((locate(row), index[row["label"]]))
    return DatasetSplits(tuple(classes), by_split["train"], by_split["val"], by_split["test"])


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_labels(root: str | Path) -> list[str]:
    """The label folder names of an ImageFolder tree (with or without split folders), sorted."""
    root = Path(root)
    top = _label_folders(root)
    if any(p.name.lower() in _SPLIT_ALIASES for p in top):
        return sorted({d.name for p in top if p.name.lower() in _SPLIT_ALIASES for d in _label_folders(p)})
    return [p.name for p in top]


def scan_image_folder(
    root: str | Path,
    classes: Sequence[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> DatasetSplits:
    """Read an ImageFolder tree: `<split>/<label>/<file>` when split folders exist, else `<label>/<file>`.

    Without split folders the images are split by `stratified_split`.

    Args:
        root: the tree's top folder.
        classes: the class codes, in the order that fixes label indices; folder names must be among them.
        val_fraction: validation share without split folders.
        test_fraction: test share without split folders.
        seed: split seed without split folders.
    """
    root = Path(root)
    index = _class_index(classes)
    split_dirs = {_SPLIT_ALIASES[p.name.lower()]: p for p in _label_folders(root) if p.name.lower() in _SPLIT_ALIASES}
    if split_dirs:
        by_split: dict[str, list[Item]] = {split: [] for split in SPLITS}
        for split, folder in split_dirs.items():
            label_dirs = _label_folders(folder)
            _check_labels({p.name for p in label_dirs}, index, folder)
            by_split[split] = [(str(path), index[d.name]) for d in label_dirs for path in _images_under(d)]
        return DatasetSplits(tuple(classes), by_split["train"], by_split["val"], by_split["test"])
    label_dirs = _label_folders(root)
    _check_labels({p.name for p in label_dirs}, index, root)
    items = [(str(path), index[d.name]) for d in label_dirs for path in _images_under(d)]
    if not items:
        raise ValueError(f"{root}: no images found in <label>/ or <split>/<label>/ folders")
    return DatasetSplits(
        tuple(classes), *stratified_split(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    )


def load_splits(
    source: str | Path,
    classes: Sequence[str],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> DatasetSplits:
    """Splits from a manifest CSV, a folder holding `manifest.csv` (a release archive), or an ImageFolder tree.

    Args:
        source: CSV file or folder.
        classes: the class codes, in the order that fixes label indices.
        val_fraction: validation share when the source has no splits.
        test_fraction: test share when the source has no splits.
        seed: split seed when the source has no splits.
    """
    source = Path(source)
    options = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
    if source.is_file():
        return read_manifest(source, classes, **options)
    if (source / MANIFEST_NAME).is_file():
        return read_manifest(source / MANIFEST_NAME, classes, **options)
    if source.is_dir():
        return scan_image_folder(source, classes, **options)
    raise FileNotFoundError(f"{source}: neither a manifest CSV nor a folder")


class ImageDataset(Dataset):
    """Decodes one image per item (in DataLoader workers) and applies a `CellTransform`."""

    def __init__(self, items: Sequence[Item], transform: CellTransform) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[position]
        return self.transform(load_image(path, self.transform.size, crop=self.transform.crop)), label


def default_num_workers(device_type: str) -> int:
    """Decoding processes when the config leaves it open.

    A GPU consumes batches faster than one core decodes them, so use most cores (at most 8). A CPU trains on
    all its cores itself; one worker overlaps decoding with compute, while more mostly preempt torch's threads
    (measured with bench/train_throughput.py on a 2-core machine).
    """
    cores = os.cpu_count() or 1
    if device_type == "cuda":
        return max(1, min(8, cores - 1))
    return 1 if cores > 1 else 0


def create_loader(
    items: Sequence[Item],
    *,
    transform: CellTransform,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over `items`; training loaders (`shuffle=True`) drop a ragged last batch.

    Args:
        items: (path, label) pairs.
        transform: decoding/augmentation for this split.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (training).
        num_workers: decoding processes; 0 decodes in the calling process.
        seed: seeds the shuffling order and the workers' augmentation RNGs.
        pin_memory: page-locked batches for faster host-to-GPU copies.
    """
    if num_workers and multiprocessing.current_process().daemon:
        # Daemonic processes (e.g. a Celery prefork child) may not start children; decode in-process instead.
        _logger.warning("running in a daemonic process: decoding with num_workers=0 instead of %d", num_workers)
        num_workers = 0
    if shuffle and len(items) < 2:
        raise ValueError("training needs at least two images (batch norm cannot train on one)")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        pin_memory=pin_memory,
        # A last training batch of one image breaks batch norm; with more images than one batch, drop it.
        drop_last=shuffle and len(items) > batch_size,
        persistent_workers=num_workers > 0,
    )
