"""Lab data imports: the per-row report for each bad input, all-or-nothing writes, new sets instead of overwrites,
the ICD-10 mapping (admin data, seeded), XLSX with formulas, size limits and who may import."""

from __future__ import annotations

import io

import openpyxl
import pytest

from annotation.models import Case
from core.errors import PermissionRefused, TooLarge
from labscreen.models import LabImport, LabImportRow, Measurement, MeasurementSet, Outcome, OutcomeRule
from labscreen.services.imports import LabImportRefused, lab_import_run
from labscreen.services.outcomes import outcome_for_icd10

pytestmark = pytest.mark.django_db

HEADER = "case_id,sex,age,icd10,WBC(10^9/L),HGB(g/L),NEU%(%),LYM-WX"


def run(admin_user, text: str, **options) -> LabImport:
    return lab_import_run(data=text.encode(), source_name="labs.csv", created_by=admin_user, **options)


def problems(lab_import: LabImport, row: int) -> list[dict]:
    return lab_import.report.get(row=row).problems


def kinds(lab_import: LabImport, row: int, severity: str = "error") -> set[str]:
    return {p["kind"] for p in problems(lab_import, row) if p["severity"] == severity}


def test_a_clean_file_stores_every_value_per_case_and_parameter(admin_user):
    Case.objects.create(code="C-1")
    lab_import = run(
        admin_user, f"{HEADER}\nC-1,F,61,C92.0,35.2,82,20.5,611\nC-2,M,40,D50.9,6.1,101,,580\n", create_cases=True
    )

    assert lab_import.status == LabImport.Status.SUCCEEDED
    assert (lab_import.sets_created, lab_import.cases_created) == (2, 1)
    first = MeasurementSet.objects.get(case__code="C-1")
    assert (first.sex, first.age, first.outcome, first.outcome_source) == ("F", 61, Outcome.MALIGNANT, "icd10")
    assert dict(first.values.values_list("parameter", "value")) == {
        "WBC(10^9/L)": 35.2, "HGB(g/L)": 82.0, "NEU%(%)": 20.5, "LYM-WX": 611.0,
    }  # fmt: skip
    second = MeasurementSet.objects.get(case__code="C-2")
    assert second.outcome == Outcome.NON_MALIGNANT
    assert "NEU%(%)" not in set(second.values.values_list("parameter", flat=True))  # an empty cell is missing
    assert lab_import.report.get(row=3).result == LabImportRow.Result.CASE_CREATED


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("C-1,F,61,C92.0,abc,82,20,600", "number"),
        ("C-1,F,61,C92.0,=SUM(A1:A3),82,20,600", "formula"),
        ('=HYPERLINK("x"),F,61,C92.0,5,82,20,600', "formula"),
        ("C-1,X,61,C92.0,5,82,20,600", "number"),
        ("C-1,F,sixty,C92.0,5,82,20,600", "number"),
        ("C-1,F,61,banana,5,82,20,600", "icd10"),
        ("NOPE-9,F,61,C92.0,5,82,20,600", "case"),
        (",F,61,C92.0,5,82,20,600", "case"),
    ],
)
def test_each_bad_input_rejects_its_row_and_the_file_writes_nothing(admin_user, line, kind):
    Case.objects.create(code="C-1")
    Case.objects.create(code="C-2")
    lab_import = run(admin_user, f"{HEADER}\nC-2,M,50,D50.9,6,120,60,500\n{line}\n")

    assert lab_import.status == LabImport.Status.REJECTED
    assert kind in kinds(lab_import, 3)
    assert lab_import.report.get(row=2).result == LabImportRow.Result.NOT_WRITTEN
    assert lab_import.report.get(row=3).result == LabImportRow.Result.REJECTED
    assert "nothing was written" in lab_import.summary
    assert MeasurementSet.objects.count() == 0
    assert Measurement.objects.count() == 0
    assert set(Case.objects.values_list("code", flat=True)) == {"C-1", "C-2"}


def test_a_duplicate_row_is_reported_with_the_row_it_repeats(admin_user):
    Case.objects.create(code="C-1")
    lab_import = run(admin_user, f"{HEADER}\nC-1,F,61,C92.0,5,82,20,600\nC-1,F,61,C92.0,5,82,20,600\n")

    assert lab_import.status == LabImport.Status.REJECTED
    assert "already in row 2" in problems(lab_import, 3)[0]["message"]
    assert kinds(lab_import, 2) == set()


def test_an_implausible_value_is_flagged_and_kept(admin_user):
    Case.objects.create(code="C-1")
    lab_import = run(admin_user, f"{HEADER}\nC-1,F,130,C92.0,5,82,140,600\n")

    assert lab_import.status == LabImport.Status.SUCCEEDED
    assert kinds(lab_import, 2, "warning") == {"range"}
    values = {m.parameter: m for m in Measurement.objects.all()}
    assert values["NEU%(%)"].value == 140
    assert values["NEU%(%)"].implausible is True
    assert values["WBC(10^9/L)"].implausible is False
    assert MeasurementSet.objects.get().age == 130


def test_a_later_import_adds_a_new_set_and_says_so(admin_user):
    Case.objects.create(code="C-1")
    run(admin_user, f"{HEADER}\nC-1,F,61,C92.0,5,82,20,600\n")
    second = run(admin_user, f"{HEADER}\nC-1,F,61,C92.0,7,90,25,610\n")

    assert MeasurementSet.objects.filter(case__code="C-1").count() == 2
    assert kinds(second, 2, "info") == {"existing"}
    assert sorted(Measurement.objects.filter(parameter="WBC(10^9/L)").values_list("value", flat=True)) == [5, 7]


def test_outcome_given_beats_the_icd10_mapping_and_a_mismatch_is_a_warning(admin_user):
    Case.objects.create(code="C-1")
    lab_import = run(admin_user, "case_id,icd10,outcome,WBC(10^9/L)\nC-1,C92.0,non_malignant,5\n")

    lab_set = MeasurementSet.objects.get()
    assert (lab_set.outcome, lab_set.outcome_source) == (Outcome.NON_MALIGNANT, "given")
    assert kinds(lab_import, 2, "warning") == {"outcome"}


def test_the_icd10_mapping_is_seeded_and_admin_data():
    assert outcome_for_icd10("C81.1") == Outcome.MALIGNANT
    assert outcome_for_icd10("c96.9") == Outcome.MALIGNANT
    assert outcome_for_icd10("D46.2") == Outcome.MALIGNANT
    assert outcome_for_icd10("D47.1") == Outcome.MALIGNANT
    assert outcome_for_icd10("C80") == Outcome.NON_MALIGNANT
    assert outcome_for_icd10("D50.9") == Outcome.NON_MALIGNANT
    assert outcome_for_icd10("D44") == Outcome.NON_MALIGNANT
    # An admin's narrower rule wins over the seeded range.
    OutcomeRule.objects.create(start="D47.9", end="D47.9", outcome=Outcome.NON_MALIGNANT)
    assert outcome_for_icd10("D47.9") == Outcome.NON_MALIGNANT
    assert outcome_for_icd10("D47.1") == Outcome.MALIGNANT


def test_semicolons_and_decimal_commas(admin_user):
    Case.objects.create(code="C-1")
    run(admin_user, "case_id;WBC(10^9/L);HGB(g/L)\nC-1;12,5;101\n")
    assert dict(Measurement.objects.values_list("parameter", "value")) == {"WBC(10^9/L)": 12.5, "HGB(g/L)": 101.0}


def xlsx(rows: list[list]) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xlsx_numbers_are_read_and_formulas_rejected(admin_user):
    Case.objects.create(code="C-1")
    Case.objects.create(code="C-2")
    data = xlsx([["case_id", "sex", "WBC(10^9/L)"], ["C-1", "M", 4.5], ["C-2", "F", "=1+1"]])

    rejected = lab_import_run(data=data, source_name="labs.xlsx", created_by=admin_user)
    assert rejected.status == LabImport.Status.REJECTED
    assert kinds(rejected, 3) == {"formula"}

    good = lab_import_run(
        data=xlsx([["case_id", "WBC(10^9/L)"], ["C-1", 4.5]]), source_name="l.xlsx", created_by=admin_user
    )
    assert good.status == LabImport.Status.SUCCEEDED
    assert Measurement.objects.get().value == 4.5


def test_size_limits_and_unusable_files_are_refused_before_anything_is_stored(admin_user, settings):
    settings.HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES = 100
    with pytest.raises(TooLarge):
        run(admin_user, HEADER + "\n" + "C-1,F,1,C92.0,1,1,1,1\n" * 10)
    settings.HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES = 10_000
    settings.HEMALOOP_LABSCREEN_IMPORT_MAX_ROWS = 2
    with pytest.raises(TooLarge, match="at most 2"):
        run(admin_user, HEADER + "\n" + "C-1,F,1,C92.0,1,1,1,1\n" * 3)
    with pytest.raises(LabImportRefused, match="case id"):
        run(admin_user, "WBC,HGB\n1,2\n")
    with pytest.raises(LabImportRefused, match="twice"):
        run(admin_user, "case_id,WBC,wbc\nC-1,1,2\n")
    with pytest.raises(LabImportRefused, match="UTF-8"):
        lab_import_run(data="case_id,Ä\nC-1,1\n".encode("latin-1"), source_name="x", created_by=admin_user)
    assert LabImport.objects.count() == 0


def test_only_admins_import(researcher, annotator):
    for user in (researcher, annotator):
        with pytest.raises(PermissionRefused):
            lab_import_run(data=b"case_id\nC-1\n", source_name="x", created_by=user)


def test_a_synthetic_column_marks_the_import(admin_user):
    Case.objects.create(code="C-1")
    lab_import = run(admin_user, "case_id,WBC(10^9/L),synthetic\nC-1,5,1\n")
    assert lab_import.synthetic is True
    assert set(Measurement.objects.values_list("parameter", flat=True)) == {"WBC(10^9/L)"}
