"""Train/validation/test splits: stratified by class, grouped by case, stable from one version to the next.

Pure functions (no Django): a group is a case, or an image without a case. Groups seen in an earlier
version keep the split they had; only groups new in this version are split, with scikit-learn.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class SplitItem:
    """One image to split: its group and its label."""

    group: str
    label: str


def group_key(*, case_code: str, sha256: str) -> str:
    """A case is one group; an image without a case is a group of its own."""
    return f"case:{case_code}" if case_code else f"image:{sha256}"


def splits_assign(
    *,
    items: Sequence[SplitItem],
    remembered: Mapping[str, str],
    key: bytes,
    salt: str,
    test_fraction: float,
    validation_fraction: float,
) -> dict[str, str]:
    """The split of every group of `items`.

    Args:
        items: the images of the version, each with its group and label.
        remembered: group -> split from earlier versions; these groups keep their split.
        key: the installation's secret; with `salt` (e.g. the version number) it seeds the shuffles.
        test_fraction: share of the new images held out for test (0.2 in Park et al.).
        validation_fraction: share of the new images not in test that go to validation.
    """
    result = {item.group: remembered[item.group] for item in items if item.group in remembered}
    new = [item for item in items if item.group not in remembered]
    test = _holdout(items=new, fraction=test_fraction, key=key, salt=f"{salt}:test")
    rest = [item for item in new if item.group not in test]
    validation = _holdout(items=rest, fraction=validation_fraction, key=key, salt=f"{salt}:validation")
    for item in new:
        result[item.group] = TEST if item.group in test else VALIDATION if item.group in validation else TRAIN
    return result


def _holdout(*, items: Sequence[SplitItem], fraction: float, key: bytes, salt: str) -> set[str]:
    """Groups making up about `fraction` of `items`, stratified by label: one fold of round(1/fraction)."""
    if fraction <= 0 or not items:
        return set()
    n_splits = max(2, round(1 / fraction))
    sizes = Counter(item.group for item in items)
    # Single-image groups need no group-aware splitter, and StratifiedGroupKFold is quadratic-ish in
    # the number of groups (12 s for 42,000 of them); StratifiedKFold does those in milliseconds.
    singles = [item for item in items if sizes[item.group] == 1]
    multiples = [item for item in items if sizes[item.group] > 1]
    held: set[str] = set()
    for part, grouped in ((singles, False), (multiples, True)):
        if part:
            held |= _fold_groups(items=part, n_splits=n_splits, grouped=grouped, key=key, salt=salt)
    return held


def _fold_groups(*, items: Sequence[SplitItem], n_splits: int, grouped: bool, key: bytes, salt: str) -> set[str]:
    labels = np.array([item.label for item in items])
    groups = np.array([item.group for item in items])
    seed = int.from_bytes(_keyed_hash(key=key, text=f"{salt}:{'grouped' if grouped else 'single'}")[:4], "big")
    splitter = (
        StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        if grouped
        else StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    )
    try:
        with warnings.catch_warnings():
            # "The least populated class has only k members": expected for rare classes, handled by the folds.
            warnings.simplefilter("ignore", UserWarning)
            _, held_out = next(splitter.split(np.zeros(len(items)), labels, groups if grouped else None))
    except ValueError:
        # Fewer images than folds, or every class smaller than the number of folds: too few to
        # stratify, so each group draws its split from the keyed hash instead.
        return _hash_holdout(groups=sorted(set(groups.tolist())), n_splits=n_splits, key=key, salt=salt)
    return set(groups[held_out].tolist())


def _hash_holdout(*, groups: Sequence[str], n_splits: int, key: bytes, salt: str) -> set[str]:
    """Each group held out with probability 1/n_splits, drawn from the keyed hash of its name."""
    return {
        group
        for group in groups
        if int.from_bytes(_keyed_hash(key=key, text=f"{salt}:{group}")[:8], "big") < 2**64 // n_splits
    }


def _keyed_hash(*, key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()
