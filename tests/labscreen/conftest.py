"""Lab-screen fixtures: lab CSVs made from synthetic cohorts, imported through the real service."""

from __future__ import annotations

import pytest

from labscreen.ml.cohort import synthetic_cohort
from labscreen.ml.table import table_csv_text
from labscreen.services.imports import lab_import_run


@pytest.fixture
def lab_cohort(admin_user):
    """lab_cohort(n) -> the LabImport of a synthetic cohort of n cases (cases created), and its table."""

    def make(n: int = 60, *, seed: int = 2, prefix: str = "LAB"):
        table = synthetic_cohort(n_cases=n, seed=seed, prefix=prefix)
        lab_import = lab_import_run(
            data=table_csv_text(table).encode(), source_name="cohort.csv", created_by=admin_user, create_cases=True
        )
        assert lab_import.status == "succeeded", lab_import.summary
        return lab_import, table

    return make
