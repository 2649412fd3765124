"""Weighted soft voting over the members' probabilities, temperature-scaled, and the inference-side loader.

Calibration is fitted on the ensemble, not per member: the ensemble's logits are log(sum_m w_m softmax(z_m))
and one temperature T is fitted on them (validation NLL, LBFGS), so `predict_proba` returns
softmax(log(p_vote) / T). Per-member temperatures are fitted too, but only to report each member's own
calibrated ECE; they do not enter the vote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.ml.calibration import apply_temperature, probabilities_to_logits
from training.ml.checkpoint import load_classifier
from training.ml.loop import autocast, resolve_device
from training.ml.models import CellClassifier
from training.ml.transforms import CellTransform, load_image

_logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"


def soft_vote(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum_m w_m p_m with the weights normalised to sum to one.

    Args:
        probabilities: one (N, C) probability array per member.
        weights: one positive weight per member.
    """
    if len(probabilities) != len(weights) or not probabilities:
        raise ValueError("need one weight per member and at least one member")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w <= 0):
        raise ValueError("ensemble weights must be positive")
    w = w / w.sum()
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    return np.tensordot(w, stacked, axes=1)


def ensemble_logits(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """log of the soft vote: the logits that the ensemble temperature scales."""
    return probabilities_to_logits(soft_vote(probabilities, weights))


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member as written to ensemble.json."""

    name: str
    checkpoint: str
    weight: float
    temperature: float


def write_ensemble_file(
    out_dir: Path,
    *,
    classes: Sequence[str],
    image_size: tuple[int, int],
    members: Sequence[MemberSpec],
    temperature: float,
    center_crop: float = 1.0,
) -> Path:
    """Write ensemble.json: what `load_ensemble` needs besides the checkpoints (paths relative to out_dir)."""
    path = Path(out_dir) / ENSEMBLE_FILE
    payload = {
        "format": 1,
        "classes": list(classes),
        "image_size": list(image_size),
        "center_crop": center_crop,
        "temperature": temperature,
        "calibration": "one temperature on log(soft vote), fitted on the validation split",
        "members": [member.__dict__ for member in members],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


class Ensemble:
    """Trained members, their vote weights and the ensemble temperature, ready for inference."""

    def __init__(
        self,
        models: Sequence[CellClassifier],
        *,
        weights: Sequence[float],
        temperature: float,
        classes: Sequence[str],
        image_size: tuple[int, int],
        device: torch.device,
        mixed_precision: bool = True,
        center_crop: float = 1.0,
    ) -> None:
        if len(models) != len(weights):
            raise ValueError("need one weight per model")
        self.models = [m.to(device).eval() for m in models]
        self.weights = tuple(float(w) for w in weights)
        self.temperature = float(temperature)
        self.classes = tuple(classes)
        self.image_size = tuple(image_size)
        self.device = device
        self.mixed_precision = mixed_precision
        self.center_crop = float(center_crop)
        self._transform = CellTransform(
            self.image_size, train=False, rotation_degrees=0, hflip=False, vflip=False, crop=self.center_crop
        )

    def _batch(self, images: Sequence[Image.Image | str | Path]) -> torch.Tensor:
        tensors = []
        for image in images:
            if not isinstance(image, Image.Image):
                image = load_image(image, self.image_size, crop=self.center_crop)
            tensors.append(self._transform(image))
        return torch.stack(tensors).to(self.device)

    @torch.no_grad()
    def member_probabilities(
        self, images: Sequence[Image.Image | str | Path], batch_size: int = 32
    ) -> list[np.ndarray]:
        """Each member's uncalibrated softmax probabilities, (N, C) per member.

        Args:
            images: PIL images or image paths.
            batch_size: images per forward pass.
        """
        outputs: list[list[np.ndarray]] = [[] for _ in self.models]
        for start in range(0, len(images), batch_size):
            batch = self._batch(images[start : start + batch_size])
            for member, model in enumerate(self.models):
                with autocast(self.device, self.mixed_precision):
                    logits = model(batch)
                outputs[member].append(torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64))
        empty = np.zeros((0, len(self.classes)))
        return [np.concatenate(chunks) if chunks else empty for chunks in outputs]

    def predict_proba(
        self, images: Sequence[Image.Image | str | Path], batch_size: int = 32, *, calibrated: bool = True
    ) -> np.ndarray:
        """(N, C) ensemble probabilities, temperature-calibrated unless `calibrated=False`.

        Paths are decoded exactly as in training (JPEGs with libjpeg's reduced-size decoding when the training
        size is at most half the original); PIL images are resized from full resolution, which can differ from
        that by a grey level or two at small training sizes.

        Args:
            images: PIL images or image paths (un-augmented; resized to the training size).
            batch_size: images per forward pass.
            calibrated: apply the ensemble temperature.
        """
        vote = soft_vote(self.member_probabilities(images, batch_size), self.weights)
        if not calibrated:
            return vote
        return apply_temperature(probabilities_to_logits(vote), self.temperature)


def load_ensemble(out_dir: str | Path, *, device: str | torch.device = "auto") -> Ensemble:
    """The ensemble that `train_ensemble` wrote to `out_dir` (safetensors checkpoints and ensemble.json).

    Args:
        out_dir: the training output folder.
        device: "auto" (CUDA when present), "cpu", "cuda:1", ...
    """
    out_dir = Path(out_dir)
    spec: dict[str, Any] = json.loads((out_dir / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    target = resolve_device(device) if isinstance(device, str) else device
    members = [MemberSpec(**member) for member in spec["members"]]
    models = [load_classifier(out_dir / member.checkpoint, device=target) for member in members]
    for member, model in zip(members, models, strict=True):
        if model.num_classes != len(spec["classes"]):
            raise ValueError(f"{member.checkpoint}: {model.num_classes} outputs for {len(spec['classes'])} classes")
    return Ensemble(
        models,
        weights=[m.weight for m in members],
        temperature=spec["temperature"],
        classes=spec["classes"],
        image_size=tuple(spec["image_size"]),
        device=target,
        center_crop=spec.get("center_crop", 1.0),  # absent from files written before the crop existed
    )
