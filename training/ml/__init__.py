"""Pure PyTorch/timm code; never imports Django.

The main names are importable from here (lazily, so `import training.ml` stays cheap):
`train_ensemble`, `EnsembleResult`, `load_ensemble`, `Ensemble`, `TrainConfig`, `config_for_profile`,
`Callback`, `TrainingCancelled`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_ensemble": "training.ml.train",
    "EnsembleResult": "training.ml.train",
    "load_ensemble": "training.ml.ensemble",
    "Ensemble": "training.ml.ensemble",
    "TrainConfig": "training.ml.config",
    "config_for_profile": "training.ml.config",
    "Callback": "training.ml.loop",
    "TrainingCancelled": "training.ml.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
