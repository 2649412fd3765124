"""Lab data per case (measurement sets from imports), the ICD-10 -> outcome mapping, studies (jobs) and the active
screen's probability per case."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotation.models import Case
from core.jobs import Job


class Outcome(models.TextChoices):
    MALIGNANT = "malignant", "Malignant hematologic disease"
    NON_MALIGNANT = "non_malignant", "Non-malignant hematologic disease"


class OutcomeRule(models.Model):
    """ICD-10 codes from `start` to `end` (compared on as many characters as `start` has, dots ignored) map to
    `outcome`. The longest matching `start` wins; a code no rule matches is non-malignant."""

    start = models.CharField(max_length=8, help_text="First code of the range, e.g. C81 or D47.1.")
    end = models.CharField(max_length=8, help_text="Last code of the range (the same as start for one code).")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["start"]
        constraints = [models.UniqueConstraint(fields=["start", "end"], name="labscreen_outcome_rule_unique")]

    def __str__(self) -> str:
        span = self.start if self.start == self.end else f"{self.start}–{self.end}"
        return f"{span}: {self.get_outcome_display()}"


class LabImport(models.Model):
    """One uploaded CSV/XLSX of lab data. All or nothing: `succeeded` with its measurement sets, or `rejected` with
    the per-row report and nothing else written."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Imported"
        REJECTED = "rejected", "Rejected"

    source_name = models.CharField(max_length=255)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=Status.choices)
    create_cases = models.BooleanField(default=False, help_text="Unknown case ids create cases (else rejected).")
    synthetic = models.BooleanField(default=False, help_text="Generated data (the demo, tests): marked everywhere.")
    rows = models.PositiveIntegerField(default=0)
    sets_created = models.PositiveIntegerField(default=0)
    cases_created = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    warnings = models.PositiveIntegerField(default=0)
    summary = models.TextField(blank=True)
    columns = models.JSONField(default=list, help_text="Analyzer parameter columns, as the file names them.")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Lab import {self.pk} ({self.source_name})"


class LabImportRow(models.Model):
    """The report of one row: its outcome and every problem found (kind, column, message, severity)."""

    class Result(models.TextChoices):
        IMPORTED = "imported", "Imported"
        CASE_CREATED = "case_created", "Imported, case created"
        REJECTED = "rejected", "Rejected"
        NOT_WRITTEN = "not_written", "Fine, not written (the import was rejected)"

    lab_import = models.ForeignKey(LabImport, on_delete=models.CASCADE, related_name="report")
    row = models.PositiveIntegerField(help_text="Row number in the file (the header is row 1).")
    case_code = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices)
    problems = models.JSONField(default=list)

    class Meta:
        ordering = ["row"]

    def __str__(self) -> str:
        return f"row {self.row} of lab import {self.lab_import_id}"


class MeasurementSet(models.Model):
    """One case's lab values from one import. A later import of the same case adds a set; the newest is used."""

    class OutcomeSource(models.TextChoices):
        GIVEN = "given", "Given in the file"
        ICD10 = "icd10", "Derived from the ICD-10 code"
        NONE = "none", "Unknown"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="lab_sets")
    lab_import = models.ForeignKey(LabImport, on_delete=models.CASCADE, related_name="sets")
    sex = models.CharField(max_length=1, blank=True, choices=[("F", "Female"), ("M", "Male")])
    age = models.FloatField(null=True, blank=True)
    icd10 = models.CharField(max_length=16, blank=True)
    diagnosis_group = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    outcome_source = models.CharField(max_length=8, choices=OutcomeSource.choices, default=OutcomeSource.NONE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["case_id", "-created_at", "-pk"]
        indexes = [models.Index(fields=["case", "-created_at"])]

    def __str__(self) -> str:
        return f"lab set {self.pk} of case {self.case_id}"


class Measurement(models.Model):
    """One analyzer parameter of a set, its name exactly as the file's column (units included)."""

    measurement_set = models.ForeignKey(MeasurementSet, on_delete=models.CASCADE, related_name="values")
    parameter = models.CharField(max_length=80)
    value = models.FloatField()
    implausible = models.BooleanField(default=False, help_text="Outside the plausible range: kept, flagged.")

    class Meta:
        ordering = ["measurement_set_id", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["measurement_set", "parameter"], name="labscreen_measurement_unique")
        ]

    def __str__(self) -> str:
        return f"{self.parameter} = {self.value:g}"


class LabStudy(Job):
    """A lab-screen study (both variants) on the newest measurement set of every case with an outcome. Its figures
    are `results`; its files (CSV, JSON, PNG, the screen model) are stored under `out_dir` (core.storage)."""

    JOB_KIND = "lab_study"

    title = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict)
    cancel_requested = models.BooleanField(default=False)
    synthetic = models.BooleanField(default=False, help_text="Some of its cases' lab data is synthetic.")
    cases = models.PositiveIntegerField(default=0)
    out_dir = models.CharField(max_length=255, blank=True)
    results = models.JSONField(default=dict, blank=True)
    files = models.JSONField(default=dict, blank=True, help_text="name -> stored file name")
    is_screen = models.BooleanField(default=False, help_text="Its screen model gives the case pages' probability.")
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["is_screen"], condition=Q(is_screen=True), name="one_screen")]
        verbose_name_plural = "lab studies"

    def __str__(self) -> str:
        return f"Lab study {self.pk}" + (f": {self.title}" if self.title else "")


class CaseScreen(models.Model):
    """The active screen's malignancy probability for a case's newest measurement set (decision support)."""

    study = models.ForeignKey(LabStudy, on_delete=models.CASCADE, related_name="screens")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="lab_screens")
    measurement_set = models.ForeignKey(MeasurementSet, on_delete=models.CASCADE, related_name="+")
    probability = models.FloatField()
    scored_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "case"], name="labscreen_case_screen_unique")]

    def __str__(self) -> str:
        return f"case {self.case_id}: {self.probability:.2f} (study {self.study_id})"
