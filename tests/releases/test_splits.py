"""Splits: grouped by case (no patient in two splits), stratified by class, stable across versions, leakage checked."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from releases.models import ManifestEntry, SplitAssignment
from releases.selectors import version_leakage
from releases.splits import SplitItem, group_key, splits_assign

LABELS = ["myeloblast", "lymphoblast", "neutrophil", "monocyte"]


def _items(*, seed: int, cases: int = 60, singles: int = 40) -> list[SplitItem]:
    """Cases of 2-8 images dominated by one class (as a patient's cells are), plus images without a case."""
    rng = random.Random(seed)
    items = []
    for c in range(cases):
        for _ in range(rng.randint(2, 8)):
            label = LABELS[c % 4] if rng.random() < 0.6 else rng.choice(LABELS)
            items.append(SplitItem(group=f"case:P-{c}", label=label))
    items += [SplitItem(group=f"image:{i:064x}", label=LABELS[i % 4]) for i in range(singles)]
    return items


def _assign(items, *, remembered=None, key=b"k" * 32, salt="v1"):
    return splits_assign(
        items=items, remembered=remembered or {}, key=key, salt=salt, test_fraction=0.2, validation_fraction=0.1
    )


def _shares(items, splits) -> dict[str, Counter]:
    per_class: dict[str, Counter] = defaultdict(Counter)
    for item in items:
        per_class[item.label][splits[item.group]] += 1
    return per_class


@pytest.mark.parametrize("seed", range(5))
def test_new_groups_are_stratified_by_class_within_tolerance(seed):
    items = _items(seed=seed)
    splits = _assign(items, salt=f"v{seed}")
    for label, counts in _shares(items, splits).items():
        total = sum(counts.values())
        assert abs(counts["test"] / total - 0.2) <= 0.05, (label, counts)
        assert abs(counts["validation"] / (total - counts["test"]) - 0.1) <= 0.06, (label, counts)


def test_remembered_groups_keep_their_split_and_only_new_groups_are_split():
    items = _items(seed=1)
    remembered = {"case:P-0": "test", "case:P-1": "train", "case:P-2": "validation", "case:gone": "test"}
    splits = _assign(items, remembered=remembered)
    assert {group: splits[group] for group in ("case:P-0", "case:P-1", "case:P-2")} == {
        "case:P-0": "test",
        "case:P-1": "train",
        "case:P-2": "validation",
    }
    assert "case:gone" not in splits, "only groups of this version are returned"
    assert set(splits) == {item.group for item in items}


def test_the_same_input_gives_the_same_split_and_another_key_another_one():
    items = _items(seed=2)
    assert _assign(items) == _assign(list(items))
    assert _assign(items) != _assign(items, key=b"x" * 32)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_too_few_images_to_stratify_still_get_a_split(count):
    items = [SplitItem(group=f"image:{i}", label="neutrophil") for i in range(count)]
    splits = _assign(items)
    assert set(splits) == {item.group for item in items}
    assert set(splits.values()) <= {"train", "validation", "test"}


def test_an_image_without_a_case_is_its_own_group():
    assert group_key(case_code="", sha256="ab" * 32) == "image:" + "ab" * 32
    assert group_key(case_code="P-7", sha256="ab" * 32) == "case:P-7"


# --- through the service, on PostgreSQL ---------------------------------------------------------------


def _cases_in_splits(version) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = defaultdict(set)
    for case_id, split in (
        ManifestEntry.objects.filter(version=version).exclude(case_id="").values_list("case_id", "split")
    ):
        splits[case_id].add(split)
    return splits


def _populate(*, cell, case, seed: int, cases: int, singles: int, prefix: str = "P") -> None:
    rng = random.Random(seed)
    for c in range(cases):
        patient = case(f"{prefix}-{c:03d}")
        for _ in range(rng.randint(2, 6)):
            cell(LABELS[c % 4] if rng.random() < 0.7 else rng.choice(LABELS), case=patient)
    for i in range(singles):
        cell(LABELS[i % 4])


@pytest.mark.django_db
def test_no_case_is_in_two_splits_and_every_split_is_used(cell, case, cut):
    _populate(cell=cell, case=case, seed=3, cases=40, singles=20)
    version = cut()
    cases = _cases_in_splits(version)
    assert len(cases) == 40
    assert all(len(splits) == 1 for splits in cases.values())
    used = Counter(ManifestEntry.objects.filter(version=version).values_list("split", flat=True))
    assert set(used) == {"train", "validation", "test"}
    assert abs(used["test"] / version.image_count - 0.2) < 0.08
    leakage = version_leakage(version=version)
    assert leakage.cases_in_several_splits == 0
    assert leakage.earlier_test_in_training == 0
    assert leakage.clean


@pytest.mark.django_db
def test_images_without_a_case_are_split_one_by_one(cell, cut):
    for i in range(60):
        cell(LABELS[i % 4])
    version = cut()
    entries = ManifestEntry.objects.filter(version=version)
    assert set(entries.values_list("case_id", flat=True)) == {""}
    counts = Counter(entries.values_list("split", flat=True))
    assert counts["test"] == 12
    assert counts["validation"] + counts["train"] == 48
    groups = set(SplitAssignment.objects.values_list("group", flat=True))
    assert groups == {f"image:{sha}" for sha in entries.values_list("sha256", flat=True)}


@pytest.mark.django_db
def test_a_case_keeps_its_split_in_later_versions_and_its_new_images_follow_it(cell, case, cut):
    _populate(cell=cell, case=case, seed=4, cases=30, singles=10)
    v1 = cut()
    before = {case_id: splits.pop() for case_id, splits in _cases_in_splits(v1).items()}
    singles_before = dict(ManifestEntry.objects.filter(version=v1, case_id="").values_list("sha256", "split"))
    # More images for every existing case, new cases, new images without a case.
    from annotation.models import Case

    for patient in Case.objects.all():
        cell(LABELS[0], case=patient)
    _populate(cell=cell, case=case, seed=5, cases=20, singles=10, prefix="Q")
    v2 = cut()

    after = _cases_in_splits(v2)
    assert all(len(splits) == 1 for splits in after.values())
    assert {case_id: after[case_id].pop() for case_id in before} == before
    singles_after = dict(ManifestEntry.objects.filter(version=v2, case_id="").values_list("sha256", "split"))
    assert {sha: singles_after[sha] for sha in singles_before} == singles_before
    new_case_splits = Counter(splits.pop() for case_id, splits in after.items() if case_id.startswith("Q-"))
    # New cases are split, not all put in one split.
    assert new_case_splits["test"] >= 1
    assert new_case_splits["train"] >= 1
    assert version_leakage(version=v2).clean


@pytest.mark.django_db
def test_the_leakage_check_reports_a_case_in_two_splits_and_earlier_test_images_in_training(cell, case, cut):
    _populate(cell=cell, case=case, seed=6, cases=20, singles=0)
    v1 = cut()
    v2 = cut()
    test_entry = ManifestEntry.objects.filter(version=v2, split="test").first()
    # Rows the service would never write: a second image of a test case, placed in train.
    extra = cell(LABELS[0], case=case("unused"))
    ManifestEntry.objects.create(
        version=v2,
        image=extra,
        sha256=extra.sha256,
        extension="png",
        label=LABELS[0],
        method="agreement",
        expert_labels=2,
        case_id=test_entry.case_id,
        split="train",
    )
    leakage = version_leakage(version=v2)
    assert leakage.cases_in_several_splits == 1
    assert leakage.shared_cases == [test_entry.case_id]
    assert leakage.earlier_test_in_training == 1
    assert not leakage.clean
    assert version_leakage(version=v1).clean
