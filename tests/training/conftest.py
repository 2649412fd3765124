"""Fixtures for the training platform tests: a small labeled data set imported from the real demo images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process

DEMO = Path(__file__).resolve().parents[2] / "demo" / "pbc-sample"
DEMO_CLASSES = ("eosinophil", "lymphocyte", "neutrophil")


def demo_subset(*, target: Path, classes: tuple[str, ...] = DEMO_CLASSES) -> Path:
    """One image per (class, case) of the demo set: 12 cases, so every split of a version gets whole cases."""
    rows, seen = [], set()
    with (DEMO / "cases.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cell_class = row["file"].split("/")[0]
            if cell_class in classes and (cell_class, row["case_id"]) not in seen:
                seen.add((cell_class, row["case_id"]))
                rows.append(row)
    for row in rows:
        (target / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO / row["file"], target / row["file"])
    with (target / "cases.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture
def labeled_demo(admin_user, tmp_path):
    """import_labeled(classes) imports demo images as trusted (final) labels with their cases."""

    def import_labeled(classes: tuple[str, ...] = DEMO_CLASSES):
        source = demo_subset(target=tmp_path / f"demo-{len(classes)}", classes=classes)
        csv_path = source / "cases.csv"
        batch = import_batch_create(
            created_by=admin_user, source=source, source_name="demo", trusted=True, csv_path=csv_path, enqueue=False
        )
        return import_batch_process(batch=batch)

    return import_labeled


@pytest.fixture(autouse=True)
def _validation_gets_whole_cases(settings):
    # 12 demo cases: the default 10% validation share of the ~10 non-test cases would round to none.
    settings.HEMALOOP_RELEASE_VALIDATION_FRACTION = 0.25
