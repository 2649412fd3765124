"""timm classifiers with a fresh 12-way head: random init, timm-hub weights, or a local safetensors directory."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

_logger = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Pretrained weights could not be found, fetched, or do not fit the architecture."""


class CellClassifier(nn.Module):
    """A timm network behind its own input normalisation, so callers feed uint8 (or [0, 1] float) images.

    Normalising on the model's device keeps DataLoader batches uint8 (a quarter of the bytes to copy) and lets
    the two ensemble members use their own pretrained mean/std on the same batch.
    """

    def __init__(self, net: nn.Module, *, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.name = name
        # Not persistent: checkpoints hold exactly the timm state dict; mean/std travel in the metadata.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.net.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        return self.net((x - self.mean) / self.std)


def _normalisation(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def _classifier_prefixes(net: nn.Module) -> tuple[str, ...]:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "classifier")
    return (names,) if isinstance(names, str) else tuple(names)


def local_weight_candidates(name: str, weights_dir: str | Path) -> list[Path]:
    """Files tried, in order, for model `name` in `weights_dir`.

    `<name>.safetensors`, `<name>/model.safetensors`, and the same two with the Hugging Face repository name
    (`<name>.<tag>`, e.g. `efficientnet_b1.ra4_e3600_r240_in1k/model.safetensors`, which is what
    `huggingface-cli download timm/<repo> --local-dir ...` produces).
    """
    weights_dir = Path(weights_dir)
    stems = [name]
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        stems.append(cfg.hf_hub_id.split("/")[-1])
    candidates = []
    for stem in stems:
        candidates += [weights_dir / f"{stem}.safetensors", weights_dir / stem / "model.safetensors"]
    return candidates


def load_local_weights(net: nn.Module, name: str, weights_dir: str | Path) -> Path:
    """Load ImageNet weights for `net` from `weights_dir`, leaving its (new) classifier head untouched.

    Every non-classifier tensor of the architecture must be in the file with the same shape; anything else is
    a `WeightsError` naming the offending keys, because a silently half-loaded backbone trains a worse model
    with no visible error.

    Args:
        net: a timm model created with the target number of classes.
        name: its timm name (selects the file).
        weights_dir: folder of safetensors files (see `local_weight_candidates`).
    """
    candidates = local_weight_candidates(name, weights_dir)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        tried = ", ".join(str(p) for p in candidates)
        raise WeightsError(f"no local weights for {name}: tried {tried}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    heads = _classifier_prefixes(net)

    def is_head(key: str) -> bool:
        return any(key == head or key.startswith(head + ".") for head in heads)

    expected = {k: v for k, v in net.state_dict().items() if not is_head(k)}
    state = {k: v for k, v in state.items() if not is_head(k)}
    # Batch-norm step counters carry no learned values and some published files omit them.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.endswith("num_batches_tracked"))
    state = {k: v for k, v in state.items() if k in expected}
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append(f"{len(mismatched)} shape mismatches, e.g. {'; '.join(mismatched[:3])}")
        if missing:
            details.append(f"{len(missing)} tensors missing from the file, e.g. {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"{len(unexpected)} tensors the model lacks, e.g. {', '.join(unexpected[:3])}")
        raise WeightsError(f"{path} does not fit {name}: " + "; ".join(details))
    result = net.load_state_dict(state, strict=False)
    if result.unexpected_keys or not all(is_head(k) or k.endswith("num_batches_tracked") for k in result.missing_keys):
        raise WeightsError(f"{path}: loading left {result.missing_keys + result.unexpected_keys} unmatched")
    _logger.info("loaded %s weights from %s (classifier head re-initialised)", name, path)
    return path


def create_classifier(
    name: str,
    num_classes: int,
    *,
    pretrained: str = "none",
    weights_dir: str | Path | None = None,
) -> CellClassifier:
    """A timm model `name` with a freshly initialised `num_classes`-way head.

    Args:
        name: timm model name, e.g. "efficientnet_b1".
        num_classes: size of the new classifier head.
        pretrained: "none" (random init), "timm" (download from the hub, or its local cache), or "local"
            (safetensors from `weights_dir`).
        weights_dir: folder of safetensors files for `pretrained="local"`.
    """
    if not timm.models.is_model(name.split(".")[0]):
        raise ValueError(f"unknown timm model {name!r}")
    if pretrained == "timm":
        try:
            # timm drops the ImageNet head itself when num_classes differs, leaving a randomly initialised one.
            net = timm.create_model(name, pretrained=True, num_classes=num_classes)
        except Exception as exc:  # network, hub and cache errors come in many types
            raise WeightsError(
                f"could not fetch ImageNet weights for {name} from the timm hub ({exc}); offline sites use "
                "pretrained='local' with a weights directory, or pretrained='none'"
            ) from exc
    elif pretrained in ("none", "local"):
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        if pretrained == "local":
            if weights_dir is None:
                raise WeightsError("pretrained='local' needs a weights directory")
            load_local_weights(net, name, weights_dir)
    else:
        raise ValueError(f"pretrained must be 'none', 'timm' or 'local', not {pretrained!r}")
    mean, std = _normalisation(net)
    return CellClassifier(net, name=name, mean=mean, std=std)
