"""Lab data imports: a CSV or XLSX of one row per case, checked row by row, written all or nothing.

Recognised columns (case and spacing ignored): case id, sex, age, ICD-10 code, diagnosis group, outcome; every other
column is a numeric analyzer parameter, stored under its name exactly as the file writes it (units included). The
report names, per row, an unknown case (created or rejected, as the admin chose), an unparseable number, a duplicate
row, a formula-looking cell (rejected: it would run when someone opens an export in a spreadsheet), a value outside
its plausible range (flagged, kept), and a case that already has lab data (a new set is added, none overwritten).
Any rejected row rejects the whole file: only the report is stored.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import dataclass, field

import openpyxl
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Count

from annotation.models import Case
from core.errors import AppError, TooLarge
from core.roles import Role, role_require
from labscreen.models import LabImport, LabImportRow, Measurement, MeasurementSet, Outcome, OutcomeRule
from labscreen.ranges import AGE_RANGE, is_plausible
from labscreen.services.outcomes import icd10_normalise, outcome_for_icd10
from labscreen.services.screen import screen_score_sets

MAX_COLUMNS = 500
# An XLSX is a zip: its members may expand to at most this many times the upload limit (against zip bombs).
XLSX_EXPANSION = 10
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
ALIASES = {
    "case_id": {"case_id", "case id", "case", "caseid", "sample", "sample_id", "sample id"},
    "sex": {"sex", "gender"},
    "age": {"age", "age (years)", "age(years)"},
    "icd10": {"icd10", "icd-10", "icd_10", "icd10 code", "icd-10 code", "icd"},
    "diagnosis_group": {"diagnosis", "diagnosis_group", "diagnosis group", "group"},
    "outcome": {"outcome", "malignant", "malignancy"},
    # labscreen.ml's generated cohorts carry it: a file that says so is marked synthetic even without the option.
    "synthetic": {"synthetic"},
}
SEX_VALUES = {"f": "F", "female": "F", "w": "F", "0": "F", "m": "M", "male": "M", "1": "M"}
OUTCOME_VALUES = {
    "malignant": Outcome.MALIGNANT,
    "1": Outcome.MALIGNANT,
    "yes": Outcome.MALIGNANT,
    "true": Outcome.MALIGNANT,
    "non_malignant": Outcome.NON_MALIGNANT,
    "non-malignant": Outcome.NON_MALIGNANT,
    "nonmalignant": Outcome.NON_MALIGNANT,
    "benign": Outcome.NON_MALIGNANT,
    "0": Outcome.NON_MALIGNANT,
    "no": Outcome.NON_MALIGNANT,
    "false": Outcome.NON_MALIGNANT,
}


class LabImportRefused(AppError):
    code = "lab_import_refused"


@dataclass
class _Row:
    number: int
    case_code: str = ""
    sex: str = ""
    age: float | None = None
    icd10: str = ""
    diagnosis_group: str = ""
    outcome: str = ""
    outcome_source: str = MeasurementSet.OutcomeSource.NONE
    values: dict[str, tuple[float, bool]] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    create_case: bool = False

    def problem(self, kind: str, message: str, *, column: str = "", severity: str = "error") -> None:
        self.problems.append({"kind": kind, "column": column, "message": message, "severity": severity})

    @property
    def rejected(self) -> bool:
        return any(p["severity"] == "error" for p in self.problems)


def _text(cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


def _looks_like_formula(text: str) -> bool:
    return bool(text) and text.startswith(FORMULA_START)


def _number(cell, *, decimal_comma: bool) -> float:
    if isinstance(cell, bool):
        raise ValueError("a truth value")
    if isinstance(cell, int | float):
        value = float(cell)
    else:
        text = _text(cell)
        if decimal_comma:
            text = text.replace(",", ".")
        value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _read_csv(data: bytes) -> tuple[list[list], bool]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabImportRefused("The CSV is not UTF-8 text; export it as UTF-8 CSV.") from exc
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    # Analyzers set to a European locale write "12,5;7,1": semicolons and decimal commas.
    return rows, delimiter != ","


def _read_xlsx(data: bytes, *, limit: int) -> list[list]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise LabImportRefused("The file is neither CSV nor a readable XLSX workbook.") from exc
    if expanded > limit * XLSX_EXPANSION:
        raise TooLarge(f"The workbook expands to {expanded} bytes; at most {limit * XLSX_EXPANSION} are accepted.")
    try:
        # Formulas stay formulas (not their cached results), so the report can name them.
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
        raise LabImportRefused(f"The workbook cannot be read: {exc}") from exc
    try:
        sheet = workbook.worksheets[0]
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
    while rows and all(cell in (None, "") for cell in rows[-1]):
        rows.pop()
    return rows


def _header(cells: list) -> tuple[dict[str, int], list[tuple[int, str]]]:
    known: dict[str, int] = {}
    parameters: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        name = _text(cell)
        if not name:
            continue
        if _looks_like_formula(name) and not name.startswith("-"):
            raise LabImportRefused(f"Column {index + 1} of the header looks like a formula ({name[:40]!r}).")
        if name.lower() in seen:
            raise LabImportRefused(f"The header names the column {name!r} twice.")
        seen.add(name.lower())
        role = next((key for key, names in ALIASES.items() if name.lower() in names), None)
        if role:
            known[role] = index
        else:
            if len(name) > 80:
                raise LabImportRefused(f"Column name {name[:40]!r}… is longer than 80 characters.")
            parameters.append((index, name))
    if "case_id" not in known:
        raise LabImportRefused("The file needs a case id column (case_id).")
    if len(parameters) > MAX_COLUMNS:
        raise LabImportRefused(f"The file has {len(parameters)} parameter columns; at most {MAX_COLUMNS} are accepted.")
    return known, parameters


def _cell(cells: list, index: int | None):
    return cells[index] if index is not None and index < len(cells) else None


def _parse_row(number: int, cells: list, known: dict[str, int], parameters, *, decimal_comma: bool) -> _Row:
    row = _Row(number=number)
    for role, index in known.items():
        if role == "synthetic":
            continue
        text = _text(_cell(cells, index))
        if _looks_like_formula(text) and not (role == "age" and _is_number(text)):
            row.problem("formula", f"{text[:40]!r} looks like a spreadsheet formula", column=role)
    if row.rejected:
        return row
    row.case_code = _text(_cell(cells, known["case_id"]))
    if not row.case_code:
        row.problem("case", "no case id")
    elif len(row.case_code) > 64:
        row.problem("case", "the case id is longer than 64 characters")
    sex = _text(_cell(cells, known.get("sex")))
    if sex:
        row.sex = SEX_VALUES.get(sex.lower(), "")
        if not row.sex:
            row.problem("number", f"sex {sex!r} is not F/M (female 0, male 1)", column="sex")
    age = _cell(cells, known.get("age"))
    if _text(age):
        try:
            row.age = _number(age, decimal_comma=decimal_comma)
        except ValueError:
            row.problem("number", f"age {_text(age)!r} is not a number", column="age")
        else:
            if not AGE_RANGE[0] <= row.age <= AGE_RANGE[1]:
                row.problem(
                    "range",
                    f"age {row.age:g} is outside {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g}",
                    column="age",
                    severity="warning",
                )
    row.icd10 = _text(_cell(cells, known.get("icd10")))
    if row.icd10 and not icd10_normalise(row.icd10):
        row.problem("icd10", f"{row.icd10!r} is not an ICD-10 code", column="icd10")
    row.diagnosis_group = _text(_cell(cells, known.get("diagnosis_group")))[:64]
    given = _text(_cell(cells, known.get("outcome")))
    if given:
        row.outcome = OUTCOME_VALUES.get(given.lower(), "")
        row.outcome_source = MeasurementSet.OutcomeSource.GIVEN
        if not row.outcome:
            row.problem("outcome", f"outcome {given!r} is not malignant/non_malignant (or 1/0)", column="outcome")
    for index, name in parameters:
        cell = _cell(cells, index)
        text = _text(cell)
        if not text:
            continue
        try:
            value = _number(cell, decimal_comma=decimal_comma)
        except ValueError:
            kind = "formula" if _looks_like_formula(text) else "number"
            what = "looks like a spreadsheet formula" if kind == "formula" else "is not a number"
            row.problem(kind, f"{text[:40]!r} {what}", column=name)
            continue
        plausible = is_plausible(name, value)
        if not plausible:
            row.problem(
                "range", f"{value:g} is outside the plausible range (kept, flagged)", column=name, severity="warning"
            )
        row.values[name] = (value, not plausible)
    return row


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def lab_import_run(
    *,
    data: bytes,
    source_name: str,
    created_by: AbstractBaseUser,
    create_cases: bool = False,
    synthetic: bool = False,
) -> LabImport:
    """Check every row of a CSV/XLSX file and, when none is rejected, write all its measurement sets in one
    transaction; either way the LabImport row and its per-row report are stored. Refuses (nothing stored) a file
    over the size limits or one whose header is unusable."""
    role_require(created_by, Role.ADMIN, action="import lab data")
    limit = settings.HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES
    if len(data) > limit:
        raise TooLarge(f"The file has {len(data)} bytes; at most {limit} are accepted.")
    if data[:4] == b"PK\x03\x04":
        rows, decimal_comma = _read_xlsx(data, limit=limit), False
    else:
        rows, decimal_comma = _read_csv(data)
    if not rows:
        raise LabImportRefused("The file is empty.")
    known, parameters = _header(rows[0])
    body = [(number, cells) for number, cells in enumerate(rows[1:], start=2) if any(_text(c) for c in cells)]
    if not body:
        raise LabImportRefused("The file has a header but no rows.")
    max_rows = settings.HEMALOOP_LABSCREEN_IMPORT_MAX_ROWS
    if len(body) > max_rows:
        raise TooLarge(f"The file has {len(body)} rows; at most {max_rows} are accepted.")

    if "synthetic" in known:
        synthetic = synthetic or any(_text(_cell(cells, known["synthetic"])) in ("1", "true") for _, cells in body)
    rules = list(OutcomeRule.objects.all())
    parsed = [_parse_row(n, cells, known, parameters, decimal_comma=decimal_comma) for n, cells in body]
    existing = dict(
        Case.objects.filter(code__in={r.case_code for r in parsed if r.case_code}).values_list("code", "pk")
    )
    prior_sets = dict(
        MeasurementSet.objects.filter(case_id__in=existing.values()).values_list("case_id").annotate(n=Count("pk"))
    )
    first_row: dict[str, int] = {}
    for row in parsed:
        if not row.case_code:
            continue
        if row.case_code in first_row:
            row.problem("duplicate", f"case {row.case_code} is already in row {first_row[row.case_code]} of this file")
            continue
        first_row[row.case_code] = row.number
        if row.case_code not in existing:
            if create_cases:
                row.create_case = True
            else:
                row.problem("case", f"no case {row.case_code} exists (the import was set not to create cases)")
        elif prior_sets.get(existing[row.case_code]):
            count = prior_sets[existing[row.case_code]]
            row.problem("existing", f"the case has {count} earlier lab set(s); this adds a new one", severity="info")
        if row.icd10:
            derived = outcome_for_icd10(row.icd10, rules=rules)
            if not row.outcome:
                row.outcome, row.outcome_source = derived, MeasurementSet.OutcomeSource.ICD10
            elif derived != row.outcome:
                row.problem(
                    "outcome",
                    f"the given outcome ({row.outcome}) differs from the ICD-10 mapping of {row.icd10} ({derived}); "
                    "the given one is kept",
                    severity="warning",
                )
        if not row.values:
            row.problem("empty", "the row has no analyzer value", severity="warning")

    rejected = [row for row in parsed if row.rejected]
    with transaction.atomic():
        lab_import = LabImport.objects.create(
            source_name=source_name[:255],
            created_by=created_by,
            status=LabImport.Status.REJECTED if rejected else LabImport.Status.SUCCEEDED,
            create_cases=create_cases,
            synthetic=synthetic,
            rows=len(parsed),
            errors=sum(p["severity"] == "error" for row in parsed for p in row.problems),
            warnings=sum(p["severity"] == "warning" for row in parsed for p in row.problems),
            columns=[name for _, name in parameters],
        )
        sets: list[MeasurementSet] = []
        if not rejected:
            sets = _write(lab_import=lab_import, rows=parsed, existing=existing)
        results = _results(rows=parsed, rejected=bool(rejected))
        LabImportRow.objects.bulk_create(
            LabImportRow(
                lab_import=lab_import,
                row=row.number,
                case_code=row.case_code[:64],
                result=result,
                problems=row.problems,
            )
            for row, result in zip(parsed, results, strict=True)
        )
        lab_import.summary = (
            f"{len(rejected)} of {len(parsed)} rows rejected: nothing was written."
            if rejected
            else f"{len(sets)} measurement sets imported ({lab_import.cases_created} new cases)."
        )
        lab_import.save(update_fields=["summary", "sets_created", "cases_created"])
        if sets:
            ids = [s.pk for s in sets]
            transaction.on_commit(lambda: screen_score_sets(set_ids=ids))
    return lab_import


def _results(*, rows: list[_Row], rejected: bool) -> list[str]:
    if rejected:
        return [LabImportRow.Result.REJECTED if row.rejected else LabImportRow.Result.NOT_WRITTEN for row in rows]
    return [LabImportRow.Result.CASE_CREATED if row.create_case else LabImportRow.Result.IMPORTED for row in rows]


def _write(*, lab_import: LabImport, rows: list[_Row], existing: dict[str, int]) -> list[MeasurementSet]:
    new = [Case(code=row.case_code) for row in rows if row.create_case]
    Case.objects.bulk_create(new)
    existing = existing | dict(Case.objects.filter(code__in=[c.code for c in new]).values_list("code", "pk"))
    sets = MeasurementSet.objects.bulk_create(
        MeasurementSet(
            case_id=existing[row.case_code],
            lab_import=lab_import,
            sex=row.sex,
            age=row.age,
            icd10=row.icd10[:16],
            diagnosis_group=row.diagnosis_group,
            outcome=row.outcome,
            outcome_source=row.outcome_source if row.outcome else MeasurementSet.OutcomeSource.NONE,
        )
        for row in rows
    )
    Measurement.objects.bulk_create(
        (
            Measurement(measurement_set=lab_set, parameter=name, value=value, implausible=implausible)
            for row, lab_set in zip(rows, sets, strict=True)
            for name, (value, implausible) in row.values.items()
        ),
        batch_size=5000,
    )
    lab_import.sets_created = len(sets)
    lab_import.cases_created = len(new)
    return sets
