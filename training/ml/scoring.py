"""Scoring many image files with an `Ensemble`: DataLoader decode workers feed both members, then calibrated voting.

`Ensemble.predict_proba` decodes in the calling process, which caps a GPU at one core's JPEG decoding; this
path overlaps decoding (in worker processes) with the forward passes and returns the same probabilities.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from training.ml.calibration import apply_temperature, probabilities_to_logits
from training.ml.data import create_loader, default_num_workers
from training.ml.ensemble import Ensemble, soft_vote
from training.ml.loop import autocast
from training.ml.transforms import build_transform

_logger = logging.getLogger(__name__)


@torch.no_grad()
def ensemble_score_paths(
    ensemble: Ensemble,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    channels_last: bool | None = None,
    calibrated: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(N, C) ensemble probabilities of image files, as `Ensemble.predict_proba` computes them.

    Args:
        ensemble: the loaded ensemble (its device, image size, weights and temperature are used).
        paths: image files, decoded like the training images.
        batch_size: images per forward pass.
        num_workers: decoding processes (None: `default_num_workers` for the ensemble's device).
        channels_last: channels-last inputs and weights (None: on CUDA only, where convolutions gain from it).
        calibrated: apply the ensemble temperature.
        on_batch: called after each batch is queued with (batch index, images so far); benchmarks time with it.
    """
    device = ensemble.device
    workers = default_num_workers(device.type) if num_workers is None else num_workers
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    if channels_last:
        for model in ensemble.models:
            model.to(memory_format=torch.channels_last)
    loader = create_loader([(str(path), 0) for path in paths], transform=build_transform(ensemble.image_size,
                           train=False), batch_size=batch_size, shuffle=False, num_workers=workers,
                           pin_memory=device.type == "cuda")
    # Softmax outputs stay on the device until the end, so the host never waits for a batch to finish.
    outputs: list[list[torch.Tensor]] = [[] for _ in ensemble.models]
    done = 0
    for index, (images, _) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        for member, model in enumerate(ensemble.models):
            with autocast(device, ensemble.mixed_precision):
                logits = model(images)
            outputs[member].append(torch.softmax(logits.float(), dim=1))
        done += len(images)
        if on_batch is not None:
            on_batch(index, done)
    if not done:
        return np.zeros((0, len(ensemble.classes)))
    probabilities = [torch.cat(chunks).cpu().numpy().astype(np.float64) for chunks in outputs]
    vote = soft_vote(probabilities, ensemble.weights)
    return apply_temperature(probabilities_to_logits(vote), ensemble.temperature) if calibrated else vote
