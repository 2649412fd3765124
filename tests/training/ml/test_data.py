"""Manifests and ImageFolder trees become stable (path, index) items; transforms and loaders behave."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.ml.blobs import BLOB_COLOURS, CLASSES, blob_image, write_blob_folder
from training.ml.data import create_loader, load_splits, read_manifest, scan_image_folder, stratified_split
from training.ml.transforms import build_transform, resolve_image_size


def _write_release_archive(root: Path) -> list[dict[str, str]]:
    """The releases layout: images/<split>/<label>/<sha256>.<ext> plus manifest.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for split, per_class in (("train", 3), ("val", 1), ("test", 1)):
        for label, colour in BLOB_COLOURS.items():
            for _ in range(per_class):
                image = blob_image(colour, rng)
                digest = hashlib.sha256(image.tobytes()).hexdigest()
                path = root / "images" / split / label / f"{digest}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                rows.append(
                    {
                        "sha256": digest,
                        "ext": "png",
                        "label": label,
                        "method": "agreement",
                        "n_labels": "2",
                        "case": "P-1",
                        "split": split,
                    }
                )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_release_archive_manifest(tmp_path):
    rows = _write_release_archive(tmp_path)
    splits = load_splits(tmp_path, CLASSES)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    for path, label in splits.train + splits.val + splits.test:
        assert Path(path).is_file()
        assert Path(path).parent.name == CLASSES[label]
    assert splits.counts()["train"] == {"neutrophil": 3, "eosinophil": 3, "basophil": 3}
    # The caller's class order fixes the indices, whatever the manifest's order.
    reordered = load_splits(tmp_path, list(reversed(CLASSES)))
    assert {label for _, label in reordered.train} == {3, 2, 1}
    # Archives kept elsewhere (object storage, a cache) are found through resolve().
    seen = []
    read_manifest(tmp_path / "manifest.csv", CLASSES, resolve=lambda row: seen.append(row["sha256"]) or "x.png")
    assert seen == [row["sha256"] for row in rows]


def test_manifest_with_paths_and_no_split_is_split_by_class(tmp_path):
    write_blob_folder(tmp_path, per_class=10)
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "sha256"])
        for label in BLOB_COLOURS:
            for path in sorted((tmp_path / label).iterdir()):
                writer.writerow([f"{label}/{path.name}", label, "0" * 64])
    splits = load_splits(tmp_path, CLASSES, val_fraction=0.2, test_fraction=0.2)
    assert splits.counts() == {
        split: dict.fromkeys(BLOB_COLOURS, n) for split, n in (("train", 6), ("val", 2), ("test", 2))
    }
    assert splits == load_splits(tmp_path, CLASSES, val_fraction=0.2, test_fraction=0.2)


def test_unknown_labels_are_an_error(tmp_path):
    write_blob_folder(tmp_path, per_class=2)
    with pytest.raises(ValueError, match="labels not in the class list: basophil"):
        scan_image_folder(tmp_path, ["neutrophil", "eosinophil"])


def test_image_folder_with_split_folders(tmp_path):
    for split in ("train", "val", "test"):
        write_blob_folder(tmp_path / split, per_class=2, seed=len(split))
    splits = scan_image_folder(tmp_path, CLASSES)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 6)
    assert all("/val/" in path for path, _ in splits.val)


def test_stratified_split_is_deterministic_disjoint_and_class_independent():
    items = [(f"{c}/{i}.png", c) for c in range(3) for i in range(20)]
    train, val, test = stratified_split(items, seed=1)
    assert sorted(train + val + test) == sorted(items)
    assert not (set(train) & set(val))
    assert not (set(val) & set(test))
    assert [sum(1 for _, c in test if c == k) for k in range(3)] == [3, 3, 3]
    assert stratified_split(list(reversed(items)), seed=1) == (train, val, test)  # input order is irrelevant
    assert stratified_split(items, seed=2)[2] != test
    # More images of class 2 leave the assignment of classes 0 and 1 untouched.
    grown = items + [(f"2/{i}.png", 2) for i in range(20, 30)]
    assert [x for x in stratified_split(grown, seed=1)[2] if x[1] < 2] == [x for x in test if x[1] < 2]
    # Tiny classes still get a val and a test image.
    assert [len(part) for part in stratified_split([("a", 0), ("b", 0), ("c", 0)])] == [1, 1, 1]


def test_transforms_give_uint8_tensors_and_augment_only_in_training():
    image = Image.new("RGB", (48, 40), (230, 210, 220))
    image.paste((90, 40, 150), (10, 10, 30, 25))
    evaluation = build_transform((32, 32), train=True, augment=False)
    out = evaluation(image)
    assert out.dtype == torch.uint8
    assert out.shape == (3, 32, 32)
    assert torch.equal(out, evaluation(image))
    training = build_transform((32, 32), train=True)
    torch.manual_seed(0)
    outs = [training(image) for _ in range(6)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # Rotated corners take the background colour, not black.
    corners = torch.stack([o[:, [0, 0, -1, -1], [0, -1, 0, -1]] for o in outs]).float()
    assert corners.min() > 150


def test_native_size_is_the_most_common_training_size(tmp_path):
    paths = []
    for i, size in enumerate([(40, 36), (40, 36), (40, 36), (50, 30)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size).save(paths[-1])
    assert resolve_image_size("native", paths) == (36, 40)  # (height, width)
    assert resolve_image_size(64, paths) == (64, 64)


def test_training_loader_never_yields_a_single_image_batch(tmp_path):
    write_blob_folder(tmp_path, per_class=3)
    items = scan_image_folder(tmp_path, CLASSES, val_fraction=0, test_fraction=0).train  # 9 images
    transform = build_transform((32, 32), train=True)
    train_batches = [len(labels) for _, labels in create_loader(items, transform=transform, batch_size=8, shuffle=True)]
    assert train_batches == [8]
    eval_batches = [
        images.shape for images, _ in create_loader(items, transform=transform, batch_size=8, shuffle=False)
    ]
    assert eval_batches == [(8, 3, 32, 32), (1, 3, 32, 32)]


def test_a_centre_crop_keeps_the_middle_of_the_image_before_resizing():
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = 200  # the "cell": the centred half of each side
    cropped = build_transform((16, 16), train=False, crop=0.5)(Image.fromarray(image))
    assert cropped.shape == (3, 16, 16)
    assert int(cropped.min()) == 200  # nothing of the border is left
    whole = build_transform((16, 16), train=False)(Image.fromarray(image))
    assert int(whole.min()) == 0
    with pytest.raises(ValueError, match="crop must be in"):
        build_transform((16, 16), train=False, crop=0.0)
