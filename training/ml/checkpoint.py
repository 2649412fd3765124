"""Checkpoints as safetensors (never pickles): the timm state dict plus JSON metadata to rebuild the model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from training.ml.models import CellClassifier

_logger = logging.getLogger(__name__)

_METADATA_KEY = "hemaloop"


def save_checkpoint(
    path: str | Path,
    model: CellClassifier,
    *,
    classes: list[str] | tuple[str, ...],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` to `path` atomically (a crash never leaves a half-written best checkpoint).

    Args:
        path: destination `.safetensors` file.
        model: the classifier to save; its timm state dict is stored as is.
        classes: class codes in head order.
        extra: more JSON-serialisable metadata (epoch, validation metrics, the run config).
    """
    path = Path(path)
    metadata = {
        "model_name": model.name,
        "num_classes": model.num_classes,
        "classes": list(classes),
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        **(extra or {}),
    }
    # safetensors refuses views and shared storage; a contiguous CPU copy of each tensor is always accepted.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    # Serialised in memory and written by Python so the file gets the usual umask permissions.
    tmp.write_bytes(save(tensors, metadata={_METADATA_KEY: json.dumps(metadata)}))
    os.replace(tmp, path)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `save_checkpoint` stored, without reading the tensors."""
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(_METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a HemaLoop checkpoint (no {_METADATA_KEY!r} metadata)")
    return json.loads(raw)


def load_classifier(path: str | Path, *, device: str | torch.device = "cpu") -> CellClassifier:
    """Rebuild the classifier saved at `path` (strict: every tensor must match the architecture).

    Args:
        path: a file written by `save_checkpoint`.
        device: where to put the model.
    """
    metadata = read_checkpoint_metadata(path)
    net = timm.create_model(metadata["model_name"], pretrained=False, num_classes=int(metadata["num_classes"]))
    net.load_state_dict(load_file(str(path)), strict=True)
    model = CellClassifier(net, name=metadata["model_name"], mean=tuple(metadata["mean"]), std=tuple(metadata["std"]))
    return model.to(device).eval()
