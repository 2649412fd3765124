"""Per-case differential counts by final label and by the active model, the blast fraction and the WHO 20% flag.

White cells are the images with a final white-cell class. "Unclassifiable" final labels (artefacts, smudged or
damaged cells) are not white cells: they are counted apart and left out of every percentage and of the blast
fraction. The model's differential covers every image of the case it has scored (labeled or not); the model
never answers "unclassifiable". All of it is decision support, not a diagnosis.

Both differentials leave out the cells hidden from the person who asks (annotation.selectors.blinding: cells they
may still label, or whose label of theirs is open): hiding only those cells, rather than every case that has one,
keeps a labeling researcher's summaries useful and still makes every figure a function of visible cells alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from django.db.models import Count, F, FloatField, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, NullIf

from annotation.models import Case, CellClass, CellImage, LabelStatus
from annotation.selectors.blinding import images_hidden_from
from inference.models import Prediction
from labscreen.selectors import case_probability_subquery
from training.models import ModelVersion
from training.selectors import model_version_active

BLAST_CODES = ("myeloblast", "lymphoblast")
# WHO: at least 20% blasts among the white cells supports acute leukemia.
BLAST_THRESHOLD = Fraction(1, 5)
SORTS = {
    "blasts": ("blast_fraction", False),
    "-blasts": ("blast_fraction", True),
    "model_blasts": ("model_blast_fraction", False),
    "-model_blasts": ("model_blast_fraction", True),
    "lab": ("lab_probability", False),
    "-lab": ("lab_probability", True),
    "code": ("code", False),
    "-code": ("code", True),
}
DEFAULT_SORT = "-blasts"


def blast_flag(*, blasts: int, white_cells: int) -> bool:
    """Blasts reach 20% of the white cells; exact (integer) arithmetic so 20.0% is flagged and 19.99% is not."""
    return white_cells > 0 and Fraction(blasts, white_cells) >= BLAST_THRESHOLD


@dataclass(frozen=True)
class ClassCount:
    code: str
    name: str
    count: int
    percent: float | None  # of the white cells; None when there are none


@dataclass(frozen=True)
class Differential:
    """One differential count of a case: per class of the taxonomy (in its order), with the blast figures."""

    rows: list[ClassCount]
    white_cells: int
    unclassifiable: int
    myeloblasts: int
    lymphoblasts: int

    @property
    def blasts(self) -> int:
        return self.myeloblasts + self.lymphoblasts

    @property
    def blast_fraction(self) -> float | None:
        return self.blasts / self.white_cells if self.white_cells else None

    @property
    def blast_percent(self) -> float | None:
        return None if self.blast_fraction is None else 100 * self.blast_fraction

    @property
    def flag(self) -> bool:
        return blast_flag(blasts=self.blasts, white_cells=self.white_cells)

    @property
    def myeloblast_lymphoblast_ratio(self) -> float | None:
        """Myeloblasts per lymphoblast; infinite with myeloblasts only, None with no blasts at all."""
        if not self.lymphoblasts:
            return float("inf") if self.myeloblasts else None
        return self.myeloblasts / self.lymphoblasts

    @property
    def ratio_display(self) -> str:
        ratio = self.myeloblast_lymphoblast_ratio
        if ratio is None:
            return "—"
        if ratio == float("inf"):
            return "∞"
        return f"{ratio:.2f} : 1"

    def as_dict(self) -> dict:
        ratio = self.myeloblast_lymphoblast_ratio
        return {
            "white_cells": self.white_cells,
            "unclassifiable": self.unclassifiable,
            "counts": {row.code: row.count for row in self.rows},
            "percent": {row.code: row.percent for row in self.rows},
            "myeloblasts": self.myeloblasts,
            "lymphoblasts": self.lymphoblasts,
            "blast_fraction": self.blast_fraction,
            "blast_flag": self.flag,
            # JSON has no infinity: "inf" says "myeloblasts only", null "no blasts".
            "myeloblast_lymphoblast_ratio": "inf" if ratio == float("inf") else ratio,
        }


@dataclass(frozen=True)
class CaseSummary:
    case: Case
    images: int
    labeled: int  # with a final label (unclassifiable included)
    unlabeled: int
    by_label: Differential
    model_version: ModelVersion | None
    by_model: Differential | None  # None without an active model version

    @property
    def flag(self) -> bool:
        return self.by_label.flag or bool(self.by_model and self.by_model.flag)


def _differential(*, counts: dict[int | None, int], classes: list[CellClass], unclassifiable: int) -> Differential:
    white = sum(n for class_id, n in counts.items() if class_id is not None)
    rows = [
        ClassCount(
            code=c.code,
            name=c.name,
            count=counts.get(c.pk, 0),
            percent=100 * counts.get(c.pk, 0) / white if white else None,
        )
        for c in classes
    ]
    by_code = {row.code: row.count for row in rows}
    return Differential(
        rows=rows,
        white_cells=white,
        unclassifiable=unclassifiable,
        myeloblasts=by_code.get("myeloblast", 0),
        lymphoblasts=by_code.get("lymphoblast", 0),
    )


def case_summary(*, case: Case, viewer, model_version: ModelVersion | None = None) -> CaseSummary:
    """The case's two differentials (final labels; the given or else the active model's predictions) over the cells
    not hidden from `viewer`; the image counts are of every cell (how far labeling is, which is no secret)."""
    model_version = model_version or model_version_active()
    # Retired classes still count where images carry them, so the rows cover the whole taxonomy.
    classes = list(CellClass.objects.order_by("order"))
    images = CellImage.objects.filter(case=case)
    hidden = images_hidden_from(user=viewer).values("pk")
    final = dict(
        images.filter(label_status=LabelStatus.FINAL)
        .exclude(pk__in=hidden)
        .order_by()
        .values_list("final_label")
        .annotate(n=Count("pk"))
    )
    unclassifiable = final.pop(None, 0)
    by_label = _differential(counts=final, classes=classes, unclassifiable=unclassifiable)
    by_model = None
    if model_version is not None:
        predicted = dict(
            Prediction.objects.filter(model_version=model_version, image__case=case)
            .exclude(image__in=hidden)
            .order_by()
            .values_list("predicted_class")
            .annotate(n=Count("pk"))
        )
        by_model = _differential(counts=predicted, classes=classes, unclassifiable=0)
    total = images.count()
    labeled = images.filter(label_status=LabelStatus.FINAL).count()
    return CaseSummary(
        case=case,
        images=total,
        labeled=labeled,
        unlabeled=total - labeled,
        by_label=by_label,
        model_version=model_version,
        by_model=by_model,
    )


def _count(queryset: QuerySet) -> Coalesce:
    """A correlated COUNT per case (subqueries, so the two relations never multiply each other's rows)."""
    counted = queryset.order_by().values("case_key").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _fraction(numerator: str, denominator: str):
    return Cast(F(numerator), FloatField()) / NullIf(Cast(F(denominator), FloatField()), Value(0.0))


def case_list(*, viewer, sort: str = DEFAULT_SORT, model_version: ModelVersion | None = None) -> QuerySet[Case]:
    """Every case with its counts (images, labeled, unlabeled, white cells, blasts; the model's scored cells and
    blasts) and blast fractions, sorted by `sort` (a key of SORTS); cases without white cells sort last. Like
    case_summary, the label and model figures leave out the cells hidden from `viewer`."""
    model_version = model_version or model_version_active()
    hidden = images_hidden_from(user=viewer).values("pk")
    images = CellImage.objects.filter(case=OuterRef("pk")).annotate(case_key=F("case_id"))
    final = images.filter(label_status=LabelStatus.FINAL)
    shown = final.exclude(pk__in=hidden)
    predictions = (
        Prediction.objects.filter(
            image__case=OuterRef("pk"), model_version_id=model_version.pk if model_version else None
        )
        .exclude(image__in=hidden)
        .annotate(case_key=F("image__case_id"))
    )
    cases = Case.objects.annotate(
        n_images=_count(images),
        labeled=_count(final),
        white_cells=_count(shown.filter(final_label__isnull=False)),
        blasts=_count(shown.filter(final_label__code__in=BLAST_CODES)),
        model_scored=_count(predictions),
        model_blasts=_count(predictions.filter(predicted_class__code__in=BLAST_CODES)),
        # The active lab screen's malignancy probability (labscreen), None without one or where a cell is hidden.
        lab_probability=case_probability_subquery(viewer=viewer),
    ).annotate(
        unlabeled=F("n_images") - F("labeled"),
        blast_fraction=_fraction("blasts", "white_cells"),
        model_blast_fraction=_fraction("model_blasts", "model_scored"),
    )
    field, descending = SORTS.get(sort, SORTS[DEFAULT_SORT])
    order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
    return cases.order_by(order, "code")


def case_list_flags(case: Case) -> tuple[bool, bool]:
    """(final labels flagged, model flagged) for a row of case_list."""
    return (
        blast_flag(blasts=case.blasts, white_cells=case.white_cells),
        blast_flag(blasts=case.model_blasts, white_cells=case.model_scored),
    )


def case_count() -> int:
    return Case.objects.count()


def case_get(*, case_id: int) -> Case | None:
    return Case.objects.filter(pk=case_id).first()
