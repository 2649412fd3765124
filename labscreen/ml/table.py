"""The one in-memory form of a lab cohort: one row per case, numeric variables with NaN for missing values, and the
0/1 outcome (1 = malignant). The Django side builds it from database rows; the command line from a CSV."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Columns of a cohort CSV that are not analyzer parameters.
ID_COLUMN = "case_id"
OUTCOME_COLUMN = "outcome"
SEX_COLUMN = "sex"
AGE_COLUMN = "age"
SEX_CODES = {"f": 0.0, "female": 0.0, "0": 0.0, "m": 1.0, "male": 1.0, "1": 1.0}
OUTCOME_CODES = {"1": 1, "malignant": 1, "0": 0, "non_malignant": 0, "non-malignant": 0}


@dataclass
class LabTable:
    """Cases x variables. `categorical` names the columns imputed by a decision tree (sex), the rest by regression."""

    ids: list[str]
    columns: list[str]
    values: np.ndarray  # (n, p) float64, NaN where missing
    outcome: np.ndarray  # (n,) int 0/1
    categorical: tuple[str, ...] = (SEX_COLUMN,)
    synthetic: bool = False
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.outcome = np.asarray(self.outcome, dtype=np.int64)
        if self.values.shape != (len(self.ids), len(self.columns)):
            raise ValueError(f"values are {self.values.shape}, expected {(len(self.ids), len(self.columns))}")
        if self.outcome.shape != (len(self.ids),):
            raise ValueError("one outcome per case")

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.columns) if name in self.categorical]

    def subset(self, rows: Sequence[int] | np.ndarray) -> LabTable:
        rows = np.asarray(rows, dtype=np.int64)
        return LabTable(
            ids=[self.ids[i] for i in rows],
            columns=list(self.columns),
            values=self.values[rows],
            outcome=self.outcome[rows],
            categorical=self.categorical,
            synthetic=self.synthetic,
            notes=dict(self.notes),
        )


def _number(text: str) -> float:
    text = (text or "").strip()
    if not text:
        return math.nan
    return float(text.replace(",", ".")) if text.count(",") == 1 and "." not in text else float(text)


def table_read_csv(path: Path, *, synthetic: bool = False) -> LabTable:
    """A cohort CSV: `case_id`, `outcome` (1/0 or malignant/non_malignant), optional `sex` (F/M) and `age`, and any
    number of numeric analyzer columns; a `synthetic` column (1 on every row) marks a generated cohort."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no rows")
    header = list(rows[0])
    for needed in (ID_COLUMN, OUTCOME_COLUMN):
        if needed not in header:
            raise ValueError(f"{path} needs a {needed!r} column")
    synthetic = synthetic or all((row.get("synthetic") or "").strip() == "1" for row in rows if "synthetic" in row)
    synthetic = synthetic and "synthetic" in header
    columns = [name for name in header if name not in (ID_COLUMN, OUTCOME_COLUMN, "synthetic")]
    values = np.full((len(rows), len(columns)), np.nan)
    outcome = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        code = (row[OUTCOME_COLUMN] or "").strip().lower()
        if code not in OUTCOME_CODES:
            raise ValueError(f"row {i + 2}: outcome {row[OUTCOME_COLUMN]!r} is not 1/0 or malignant/non_malignant")
        outcome[i] = OUTCOME_CODES[code]
        for j, name in enumerate(columns):
            text = (row.get(name) or "").strip()
            if name == SEX_COLUMN:
                values[i, j] = SEX_CODES.get(text.lower(), math.nan) if text else math.nan
            else:
                try:
                    values[i, j] = _number(text)
                except ValueError as exc:
                    raise ValueError(f"row {i + 2}, column {name!r}: {text!r} is not a number") from exc
    return LabTable(
        ids=[row[ID_COLUMN] for row in rows], columns=columns, values=values, outcome=outcome, synthetic=synthetic
    )


def table_write_csv(table: LabTable, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table_csv_text(table), encoding="utf-8")
    return path


def table_csv_text(table: LabTable, *, extra: dict[str, list[str]] | None = None) -> str:
    """The cohort as CSV text (the import and the command line both read it); `extra` adds columns (e.g. icd10)."""
    handle = io.StringIO()
    writer = csv.writer(handle)
    extra = extra or {}
    flag = ["synthetic"] if table.synthetic else []
    writer.writerow([ID_COLUMN, OUTCOME_COLUMN, *table.columns, *extra, *flag])
    for index, (case_id, outcome, row) in enumerate(zip(table.ids, table.outcome, table.values, strict=True)):
        cells = []
        for name, value in zip(table.columns, row, strict=True):
            if math.isnan(value):
                cells.append("")
            elif name == SEX_COLUMN:
                cells.append("M" if value >= 0.5 else "F")
            else:
                cells.append(f"{value:.6g}")
        more = [values[index] for values in extra.values()]
        writer.writerow([case_id, int(outcome), *cells, *more, *(["1"] if table.synthetic else [])])
    return handle.getvalue()
