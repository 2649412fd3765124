"""Reads for the training pages and API: runs with their progress, model versions and their report tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from core.jobs import UNFINISHED
from releases.models import DatasetVersion
from training.models import ModelVersion, TrainingRun


def training_run_list() -> QuerySet[TrainingRun]:
    # Reads only: stale runs are failed by the periodic reaper (core.tasks), never by someone looking at them.
    return TrainingRun.objects.select_related("dataset_version", "requested_by", "model_version")


def training_run_get(*, run_id: int) -> TrainingRun | None:
    return training_run_list().filter(pk=run_id).first()


def training_run_current() -> TrainingRun | None:
    """The queued or running run (one at a time), for the home page."""
    return training_run_list().filter(status__in=UNFINISHED).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("run", "run__dataset_version", "activated_by")


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return model_version_list().filter(pk=version_id).first()


def model_version_active(*, for_update: bool = False) -> ModelVersion | None:
    """The version inference uses (at most one is ACTIVE), or None; `for_update` locks its row (inside a
    transaction) so two concurrent requests act on it one after the other."""
    versions = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)
    return (versions.select_for_update() if for_update else versions).first()


def model_version_head_list() -> QuerySet[ModelVersion]:
    """Head versions (queue refreshes on the embedding index), newest first."""
    return model_version_list().filter(kind=ModelVersion.Kind.HEAD)


@dataclass(frozen=True)
class HeadPolicy:
    """What happens to the next refreshed head, as the settings and the active version decide it."""

    auto_activate: bool
    refresh_every: int
    automatic: bool  # a refresh follows new final labels by itself
    pinned: ModelVersion | None  # the fully trained ensemble that keeps refreshed heads candidates
    message: str


def head_policy(*, active: ModelVersion | None) -> HeadPolicy:
    """Whether refreshes run by themselves and whether their heads become active (HEMALOOP_HEAD_AUTO_ACTIVATE, and
    an active fully trained ensemble pins itself: inference.services.heads), in one sentence for the page."""
    every = settings.HEMALOOP_HEAD_REFRESH_EVERY
    automatic = settings.HEMALOOP_INDEX_AUTO and every > 0
    when = f"every {every} new final labels and on request" if automatic else "on request only (automatic refresh off)"
    pinned = active if active is not None and not active.is_head else None
    if not settings.HEMALOOP_HEAD_AUTO_ACTIVATE:
        fate = "stays a candidate (HEMALOOP_HEAD_AUTO_ACTIVATE is off) until an admin activates it"
    elif pinned is not None:
        fate = (
            f"stays a candidate and the queue keeps its order: version {pinned.pk}, a fully trained ensemble an admin "
            "activated, is pinned (HEMALOOP_HEAD_AUTO_ACTIVATE is on, and applies again once a head is activated)"
        )
    else:
        fate = (
            "becomes active by itself and re-orders the queue (HEMALOOP_HEAD_AUTO_ACTIVATE is on), until an admin "
            "activates a fully trained ensemble, which pins it"
        )
    return HeadPolicy(
        auto_activate=settings.HEMALOOP_HEAD_AUTO_ACTIVATE,
        refresh_every=every,
        automatic=automatic,
        pinned=pinned,
        message=f"A head is refreshed {when}; a refreshed head {fate}.",
    )


def dataset_version_choices() -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.order_by("-number")


@dataclass
class SummaryRow:
    """One line of the paper's Table 2: a member or the ensemble on the test split."""

    name: str
    key: str
    accuracy: float | None
    accuracy_ci: list | None
    precision: float | None
    recall: float | None
    f1: float | None
    f1_ci: list | None
    auroc: float | None
    ece: float | None
    ece_calibrated: float | None
    temperature: float | None


@dataclass
class ModelReport:
    summary: list[SummaryRow]
    # Table 3: per class, the ensemble's AUROC, precision, recall, F1 and support.
    per_class: list[dict[str, Any]]
    mcnemar: list[dict[str, Any]]
    delong: list[dict[str, Any]]
    split_sizes: dict[str, int]
    plots: list[str] = field(default_factory=list)


def model_version_report(*, version: ModelVersion) -> ModelReport:
    """The metrics.json of a version rearranged into the tables of the report page."""
    metrics = version.metrics
    members = metrics.get("models", {})
    rows = [
        _summary_row(
            key=key, name=data.get("name", key), test=data.get("test", {}), temperature=data.get("temperature")
        )
        for key, data in members.items()
    ]
    ensemble = metrics.get("ensemble", {})
    rows.append(
        _summary_row(
            key="ensemble",
            name="Ensemble (soft voting)",
            test=ensemble.get("test", {}),
            temperature=ensemble.get("temperature"),
        )
    )
    per_class = [{"code": code, **values} for code, values in ensemble.get("test", {}).get("per_class", {}).items()]
    comparisons = metrics.get("comparisons", {})
    mcnemar = [
        {"pair": pair.replace("_vs_", " vs "), **result} for pair, result in comparisons.get("mcnemar", {}).items()
    ]
    delong = [
        {"pair": pair.replace("_vs_", " vs "), "code": code, **result}
        for pair, by_class in comparisons.get("delong", {}).items()
        for code, result in (by_class or {}).items()
        if result
    ]
    return ModelReport(
        summary=rows,
        per_class=per_class,
        mcnemar=mcnemar,
        delong=delong,
        split_sizes=metrics.get("split_sizes", {}),
        plots=sorted(version.plots),
    )


def _summary_row(*, key: str, name: str, test: dict[str, Any], temperature: float | None) -> SummaryRow:
    return SummaryRow(
        name=name,
        key=key,
        accuracy=test.get("accuracy"),
        accuracy_ci=test.get("accuracy_ci95"),
        precision=test.get("macro_precision"),
        recall=test.get("macro_recall"),
        f1=test.get("macro_f1"),
        f1_ci=test.get("macro_f1_ci95"),
        auroc=test.get("macro_auroc"),
        ece=test.get("ece"),
        ece_calibrated=test.get("ece_calibrated"),
        temperature=temperature,
    )
