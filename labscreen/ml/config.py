"""The study's settings, saved with every study (each protocol step is configurable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from labscreen.ml.models import MODEL_NAMES


@dataclass(frozen=True)
class StudyConfig:
    """Args:
    folds: stratified cross-validation folds (step 7; 10 in the publication).
    top_k: variables kept by the point-biserial ranking (step 5).
    max_missing: cases with a larger share of missing values are excluded (step 1; 0.9).
    impute, scale, select: steps 2, 4 and 5 on or off.
    models: which of the seven models to run.
    nn_max_iter: epochs of the neural network (300).
    bootstrap: resamples of the AUC confidence intervals (0 turns them off).
    permutation_repeats: repeats of the permutation importance of the best model.
    label_permutation: run the sanity check on shuffled outcomes.
    seed: folds, models, bootstrap and shuffles are reproducible from it.
    n_jobs: processes the folds run in (1: in this one; the figures do not depend on it).
    """

    folds: int = 10
    top_k: int = 20
    max_missing: float = 0.9
    impute: bool = True
    scale: bool = True
    select: bool = True
    models: tuple[str, ...] = MODEL_NAMES
    nn_max_iter: int = 300
    bootstrap: int = 1000
    permutation_repeats: int = 5
    label_permutation: bool = True
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError("folds must be at least 2")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if not 0.0 <= self.max_missing <= 1.0:
            raise ValueError("max_missing is a share between 0 and 1")
        unknown = [name for name in self.models if name not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be among {', '.join(MODEL_NAMES)}; got {list(self.models)}")
        if self.nn_max_iter < 1 or self.bootstrap < 0 or self.permutation_repeats < 1:
            raise ValueError("nn_max_iter and permutation_repeats must be positive, bootstrap not negative")
        object.__setattr__(self, "models", tuple(self.models))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StudyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown study settings: {', '.join(unknown)}")
        values = dict(data)
        if "models" in values:
            values["models"] = tuple(values["models"])
        return cls(**values)
