"""Reads of the lab screen: imports and their reports, studies, the cohort a study runs on (as a pure LabTable), a
case's lab data and its screen probability, and the subquery that lets the case list sort by that probability."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from django.db.models import Exists, FloatField, OuterRef, QuerySet, Subquery

from annotation.models import Case
from annotation.selectors.blinding import images_hidden_from
from labscreen.ml.table import AGE_COLUMN, SEX_COLUMN, LabTable
from labscreen.models import CaseScreen, LabImport, LabStudy, Measurement, MeasurementSet, Outcome


def lab_import_list() -> QuerySet[LabImport]:
    return LabImport.objects.select_related("created_by")


def lab_import_get(*, import_id: int) -> LabImport | None:
    return LabImport.objects.filter(pk=import_id).first()


def lab_study_list() -> QuerySet[LabStudy]:
    return LabStudy.objects.select_related("requested_by")


def lab_study_get(*, study_id: int) -> LabStudy | None:
    return LabStudy.objects.filter(pk=study_id).first()


def lab_screen_active() -> LabStudy | None:
    return LabStudy.objects.filter(is_screen=True).first()


def newest_sets() -> QuerySet[MeasurementSet]:
    """The newest measurement set of every case that has one."""
    newest = MeasurementSet.objects.filter(case=OuterRef("case")).order_by("-created_at", "-pk").values("pk")[:1]
    return MeasurementSet.objects.filter(pk=Subquery(newest))


def cohort_counts() -> dict[str, int]:
    """Cases whose newest set has an outcome, per outcome (what a study would run on)."""
    sets = newest_sets().exclude(outcome="")
    return {
        Outcome.MALIGNANT: sets.filter(outcome=Outcome.MALIGNANT).count(),
        Outcome.NON_MALIGNANT: sets.filter(outcome=Outcome.NON_MALIGNANT).count(),
    }


def table_from_sets(sets: list[MeasurementSet], *, columns: list[str] | None = None) -> LabTable:
    """A LabTable of these sets: the parameters in the order they first appear (or `columns`, as a screen model
    was trained on), then sex (female 0, male 1) and age; missing values NaN. Outcome 1 = malignant (0 if unknown)."""
    values_by_set: dict[int, dict[str, float]] = {}
    names: dict[str, None] = {}
    for set_id, parameter, value in (
        Measurement.objects.filter(measurement_set__in=[s.pk for s in sets])
        .order_by("measurement_set_id", "pk")
        .values_list("measurement_set_id", "parameter", "value")
    ):
        values_by_set.setdefault(set_id, {})[parameter] = value
        names.setdefault(parameter)
    if columns is None:
        columns = [*names, SEX_COLUMN, AGE_COLUMN]
    matrix = np.full((len(sets), len(columns)), np.nan)
    for i, lab_set in enumerate(sets):
        row = values_by_set.get(lab_set.pk, {})
        for j, name in enumerate(columns):
            if name == SEX_COLUMN:
                matrix[i, j] = {"F": 0.0, "M": 1.0}.get(lab_set.sex, math.nan)
            elif name == AGE_COLUMN:
                matrix[i, j] = lab_set.age if lab_set.age is not None else math.nan
            else:
                matrix[i, j] = row.get(name, math.nan)
    return LabTable(
        ids=[lab_set.case.code for lab_set in sets],
        columns=list(columns),
        values=matrix,
        outcome=np.array([1 if s.outcome == Outcome.MALIGNANT else 0 for s in sets], dtype=np.int64),
        synthetic=any(s.lab_import.synthetic for s in sets),
    )


def study_cohort() -> tuple[LabTable, list[MeasurementSet]]:
    """The cohort a study runs on now: the newest set of every case with an outcome."""
    sets = list(newest_sets().exclude(outcome="").select_related("case", "lab_import").order_by("case__code"))
    return table_from_sets(sets), sets


@dataclass(frozen=True)
class CaseLab:
    """What a case page shows of the lab screen."""

    lab_set: MeasurementSet | None
    values: list[Measurement]
    sets: int
    screen: CaseScreen | None
    study: LabStudy | None
    # The viewer may still label (or holds an open label on) a cell of this case: a malignancy probability would
    # tell them what to expect in its cells, so none of the lab screen is shown (blinding).
    hidden: bool = False

    @property
    def synthetic(self) -> bool:
        return bool(self.lab_set and self.lab_set.lab_import.synthetic)

    @property
    def probability_percent(self) -> float | None:
        return None if self.screen is None else 100 * self.screen.probability

    def as_dict(self) -> dict:
        lab_set = self.lab_set
        if self.hidden:
            return {"hidden": True, "reason": "You may still label cells of this case."}
        return {
            "measurement_sets": self.sets,
            "synthetic": self.synthetic,
            "outcome": lab_set.outcome if lab_set else None,
            "outcome_source": lab_set.outcome_source if lab_set else None,
            "icd10": lab_set.icd10 if lab_set else None,
            "values": {m.parameter: m.value for m in self.values},
            "screen": None
            if self.screen is None
            else {
                "study": self.study.pk,
                "model": self.study.results.get("screen_model"),
                "malignancy_probability": self.screen.probability,
                "notice": "Decision support, not a diagnosis.",
            },
        }


def case_lab(*, case: Case, viewer) -> CaseLab:
    """The case's newest lab data and the active screen's probability, unless `viewer` may still label (or holds an
    open label on) one of its cells."""
    if images_hidden_from(user=viewer).filter(case=case).exists():
        return CaseLab(lab_set=None, values=[], sets=0, screen=None, study=None, hidden=True)
    sets = MeasurementSet.objects.filter(case=case).select_related("lab_import").order_by("-created_at", "-pk")
    newest = sets.first()
    study = lab_screen_active()
    screen = None
    if study is not None and newest is not None:
        screen = CaseScreen.objects.filter(study=study, case=case, measurement_set=newest).first()
    values = list(Measurement.objects.filter(measurement_set=newest).order_by("pk")) if newest else []
    return CaseLab(lab_set=newest, values=values, sets=sets.count(), screen=screen, study=study if screen else None)


def case_probability_subquery(*, viewer) -> Subquery:
    """The active screen's probability for the case of the outer row (for annotating and sorting a case list); None
    for a case with a cell hidden from `viewer` (see CaseLab.hidden)."""
    hidden = images_hidden_from(user=viewer).filter(case=OuterRef("case"))
    return Subquery(
        CaseScreen.objects.filter(case=OuterRef("pk"), study__is_screen=True)
        .exclude(Exists(hidden))
        .values("probability")[:1],
        output_field=FloatField(),
    )
