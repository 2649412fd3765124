"""Train the ensemble's members one after another; each keeps its best epoch and predicts validation and test."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.ml.config import TrainConfig
from training.ml.data import Item, create_loader, default_num_workers
from training.ml.loop import CallbackList, fit, predict_logits, use_channels_last
from training.ml.models import create_classifier, freeze_leading_blocks
from training.ml.tensor_data import TensorBatches, decode_items
from training.ml.transforms import build_transform

_logger = logging.getLogger(__name__)

# What `fit` and `predict_logits` iterate: a DataLoader, or TensorBatches over images decoded once.
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RunLoaders:
    """The three loaders of a run: augmented and shuffled for training, plain and in order for evaluation."""

    train: Batches
    val: Batches
    test: Batches


@dataclass(frozen=True)
class TrainedMember:
    """One member after training: its best-epoch checkpoint and its logits on validation and test."""

    key: str
    name: str
    checkpoint: Path
    history: list[dict[str, Any]]
    best_epoch: int
    val_logits: np.ndarray
    test_logits: np.ndarray


def member_keys(names: Sequence[str]) -> list[str]:
    """Metrics are keyed by model name; the same architecture twice gets its position appended."""
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may still draw from the legacy global RNG
    torch.manual_seed(seed)


def create_run_loaders(
    *,
    config: TrainConfig,
    device: torch.device,
    image_size: tuple[int, int],
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    test_items: Sequence[Item],
) -> RunLoaders:
    """Build the run's loaders: DataLoaders that decode every epoch, or with `config.decode_once` (and the decoded
    images within `config.decode_once_max_gb`) batches over images decoded once (see `decode_once_loaders`).

    Args:
        config: batch sizes, augmentation, workers (None: `default_num_workers` for the device), seed, decode_once.
        device: where the models run; CUDA pins host memory.
        image_size: (height, width) every image is resized to.
        train_items: (image path, class index) pairs, augmented and shuffled.
        val_items: pairs for validation, in order.
        test_items: pairs for test, in order.
    """
    workers = default_num_workers(device.type) if config.num_workers is None else config.num_workers
    if config.decode_once:
        count = len(train_items) + len(val_items) + len(test_items)
        gigabytes = count * 3 * image_size[0] * image_size[1] / 1e9
        if gigabytes <= config.decode_once_max_gb:
            return decode_once_loaders(
                config=config,
                image_size=image_size,
                workers=workers,
                train_items=train_items,
                val_items=val_items,
                test_items=test_items,
            )
        _logger.warning(
            "decoding per epoch: %d images at %dx%d would take %.1f GB decoded (decode_once_max_gb %.1f)",
            count,
            *image_size,
            gigabytes,
            config.decode_once_max_gb,
        )
    options: dict[str, Any] = {"num_workers": workers, "seed": config.seed, "pin_memory": device.type == "cuda"}
    train_transform = build_transform(
        image_size,
        train=True,
        augment=config.augment,
        rotation_degrees=config.rotation_degrees,
        hflip=config.hflip,
        vflip=config.vflip,
        crop=config.center_crop,
    )
    eval_transform = build_transform(image_size, train=False, crop=config.center_crop)
    return RunLoaders(
        train=create_loader(
            train_items, transform=train_transform, batch_size=config.batch_size, shuffle=True, **options
        ),
        val=create_loader(
            val_items, transform=eval_transform, batch_size=config.eval_batch_size, shuffle=False, **options
        ),
        test=create_loader(
            test_items, transform=eval_transform, batch_size=config.eval_batch_size, shuffle=False, **options
        ),
    )


def decode_once_loaders(
    *,
    config: TrainConfig,
    image_size: tuple[int, int],
    workers: int,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    test_items: Sequence[Item],
) -> RunLoaders:
    """Every split decoded once into uint8 tensors at `image_size` (as the evaluation DataLoader decodes), training
    batches reshuffled every epoch and augmented in torch (flips, rotation with edge fill: `augment_batch`)."""
    started = time.perf_counter()
    decoded = [
        decode_items(items, image_size, num_workers=workers, crop=config.center_crop)
        for items in (train_items, val_items, test_items)
    ]
    _logger.info(
        "decoded %d images once at %dx%d in %.1f s",
        sum(len(images) for images, _ in decoded),
        *image_size,
        time.perf_counter() - started,
    )
    (train_images, train_labels), (val_images, val_labels), (test_images, test_labels) = decoded
    return RunLoaders(
        train=TensorBatches(
            train_images,
            train_labels,
            batch_size=config.batch_size,
            shuffle=True,
            augment=config.augment,
            rotation_degrees=config.rotation_degrees,
            hflip=config.hflip,
            vflip=config.vflip,
            seed=config.seed,
        ),
        val=TensorBatches(val_images, val_labels, batch_size=config.eval_batch_size, shuffle=False),
        test=TensorBatches(test_images, test_labels, batch_size=config.eval_batch_size, shuffle=False),
    )


def train_member(
    *,
    index: int,
    key: str,
    name: str,
    config: TrainConfig,
    loaders: RunLoaders,
    classes: Sequence[str],
    class_weights: torch.Tensor | None,
    device: torch.device,
    image_size: tuple[int, int],
    out_dir: Path,
    callbacks: CallbackList,
) -> TrainedMember:
    """Train one member from seed `config.seed + index`, keep its best epoch and predict the test split.

    Args:
        index: position in `config.models`; names the checkpoint `model<index>_<name>.safetensors`.
        key: the member's key in metrics (see `member_keys`).
        name: timm model name.
        config: the run's settings.
        loaders: the run's loaders (see `create_run_loaders`).
        classes: class codes, in the heads' output order.
        class_weights: loss weights per class, or None.
        device: where the model trains.
        image_size: (height, width), recorded in the checkpoint.
        out_dir: the run's output folder.
        callbacks: progress and cancellation.
    """
    callbacks.on_model_start(index, name)
    seed_everything(config.seed + index)
    model = create_classifier(name, len(classes), pretrained=config.pretrained, weights_dir=config.weights_dir)
    freeze_leading_blocks(model, config.frozen_blocks)
    checkpoint = out_dir / f"model{index}_{name}.safetensors"
    result = fit(
        model,
        train_loader=loaders.train,
        val_loader=loaders.val,
        config=config,
        device=device,
        checkpoint_path=checkpoint,
        classes=classes,
        class_weights=class_weights,
        callbacks=callbacks,
        model_index=index,
        checkpoint_metadata={"model_key": key, "image_size": list(image_size), "config": config.to_dict()},
    )
    test_logits, _ = predict_logits(
        model,
        loaders.test,
        device=device,
        mixed_precision=config.mixed_precision,
        channels_last=use_channels_last(config, device),
    )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return TrainedMember(
        key=key,
        name=name,
        checkpoint=checkpoint,
        history=result.history,
        best_epoch=result.best_epoch,
        val_logits=result.best_evaluation.logits,
        test_logits=test_logits,
    )


def train_members(
    *,
    config: TrainConfig,
    loaders: RunLoaders,
    classes: Sequence[str],
    class_weights: torch.Tensor | None,
    device: torch.device,
    image_size: tuple[int, int],
    out_dir: Path,
    callbacks: CallbackList,
) -> list[TrainedMember]:
    """Train every model of `config.models` in turn (see `train_member` for the arguments)."""
    return [
        train_member(
            index=index,
            key=key,
            name=name,
            config=config,
            loaders=loaders,
            classes=classes,
            class_weights=class_weights,
            device=device,
            image_size=image_size,
            out_dir=out_dir,
            callbacks=callbacks,
        )
        for index, (key, name) in enumerate(zip(member_keys(list(config.models)), config.models, strict=True))
    ]
