"""Retrain runs as an admin starts and cancels them; the worker side is training.services.execute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from core.jobs import UNFINISHED, JobStatus, job_is_stale, job_send_on_commit, jobs_fail_stale
from core.roles import Role, role_require
from releases.models import DatasetVersion, Split
from releases.services.versions import dataset_version_create
from training import tasks
from training.errors import TrainingBusy, TrainingRefused
from training.ml.config import TrainConfig, config_for_profile
from training.ml.sources import RANDOM, UNAVAILABLE, MemberWeights, plan_weights
from training.models import TrainingRun

PROFILES = ("smoke", "quick", "lite", "paper")
# The default wherever its members' ImageNet weights can be had (a local file, the timm cache or a reachable hub).
PAPER_PROFILE = "paper"
# Offered when a run would start from random weights, and the default then: ImageNet weights that come with the
# install.
OFFLINE_PROFILE = "lite"


@dataclass(frozen=True)
class WeightsPlan:
    """What a run of `profile` will start from, member by member, and the config it will then train with."""

    profile: str
    config: TrainConfig
    members: tuple[MemberWeights, ...]

    @property
    def unavailable(self) -> bool:
        return any(m.source == UNAVAILABLE for m in self.members)

    @property
    def starts_random(self) -> bool:
        return any(m.source == RANDOM for m in self.members)

    @property
    def message(self) -> str:
        if self.unavailable:
            details = "; ".join(f"{m.model}: {m.detail}" for m in self.members if m.source == UNAVAILABLE)
            return f"The {self.profile} profile cannot start: its weights are unavailable ({details})."
        if self.starts_random:
            offer = (
                f" The {OFFLINE_PROFILE} profile starts from ImageNet weights installed with HemaLoop, offline, "
                "and trains on a CPU."
                if self.profile != OFFLINE_PROFILE
                else ""
            )
            return (
                f"A {self.profile} run starts from random weights and the model will be weak: it has learned "
                f"nothing from ImageNet.{offer}"
            )
        return f"Every {self.profile} member starts from ImageNet weights."

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "pretrained": self.config.pretrained,
            "starts_random": self.starts_random,
            "unavailable": self.unavailable,
            "message": self.message,
            "members": [m.to_dict() for m in self.members],
        }


def training_weights_plan(*, profile: str, overrides: dict[str, Any] | None = None) -> WeightsPlan:
    """Where each member of a `profile` run started now would get its weights, and the config it would train with.

    A timm-hub profile whose weights can be neither fetched nor found in the cache trains from random weights
    (the config says pretrained="none", so the worker does not fail on the download) and the plan says so;
    the hub is probed from this process (see `training.ml.sources.hub_reachable`).
    """
    if profile not in PROFILES:
        raise TrainingRefused(f"Unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    try:
        config = config_for_profile(profile, **(overrides or {}))
    except (TypeError, ValueError) as exc:
        raise TrainingRefused(f"Invalid training settings: {exc}") from exc
    members = plan_weights(config)
    if config.pretrained == "timm" and any(m.source == RANDOM for m in members):
        reason = next(m.detail for m in members if m.source == RANDOM)
        config = config.replace(pretrained="none")
        members = [
            m if m.source == RANDOM else MemberWeights(m.model, RANDOM, f"{reason}; every member starts random alike")
            for m in members
        ]
    return WeightsPlan(profile=profile, config=config, members=tuple(members))


def training_weights_plans() -> list[WeightsPlan]:
    """`training_weights_plan` for every profile, in menu order."""
    return [training_weights_plan(profile=profile) for profile in PROFILES]


@dataclass(frozen=True)
class DefaultProfile:
    """The profile a run gets when none is chosen, and the one line that says why."""

    profile: str
    reason: str


def training_default_profile(*, plans: list[WeightsPlan] | None = None) -> DefaultProfile:
    """The paper profile where its members' ImageNet weights can be had, else `lite` (bundled, offline).

    Args:
        plans: the plans already made for this request (`training_weights_plans`), so the hub is not asked again;
            omitted, the paper and lite plans are made here (the hub probe is cached, see `hub_reachable`).
    """
    by_profile = {plan.profile: plan for plan in plans or ()}
    paper = by_profile.get(PAPER_PROFILE) or training_weights_plan(profile=PAPER_PROFILE)
    if not (paper.starts_random or paper.unavailable):
        sources = ", ".join(sorted({m.source for m in paper.members}))
        return DefaultProfile(
            PAPER_PROFILE,
            f"Default: {PAPER_PROFILE}, the paper's recipe; its members start from ImageNet weights ({sources}).",
        )
    offline = by_profile.get(OFFLINE_PROFILE) or training_weights_plan(profile=OFFLINE_PROFILE)
    if offline.unavailable:
        # Neither has its weights: the paper recipe stays the default and its plan says how weak it will be.
        return DefaultProfile(
            PAPER_PROFILE,
            f"Default: {PAPER_PROFILE}, although it starts from random weights: the bundled weights of "
            f"{OFFLINE_PROFILE} are missing too.",
        )
    why = next(m.detail for m in paper.members if not m.pretrained)
    return DefaultProfile(
        OFFLINE_PROFILE,
        f"Default: {OFFLINE_PROFILE}, from the ImageNet weights installed with HemaLoop: the {PAPER_PROFILE} "
        f"profile's weights cannot be had here ({why}).",
    )


def training_run_start(
    *,
    requested_by: AbstractBaseUser,
    dataset_version: DatasetVersion | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainingRun:
    """Queue a retrain of the ensemble on `dataset_version`, or on a version frozen from the current labels now.

    Without a `profile`, `training_default_profile`'s. The run records where each member's weights come from
    (`training_weights_plan`); a profile whose weights are unavailable is refused before anything is queued.
    """
    role_require(requested_by, Role.ADMIN, action="start training runs")
    if profile is None:
        profile = training_default_profile().profile
    plan = training_weights_plan(profile=profile, overrides=overrides)
    if plan.unavailable:
        raise TrainingRefused(plan.message)
    _busy_check()
    with transaction.atomic():
        # The frozen version rolls back with the run if the run is refused below.
        if dataset_version is None:
            dataset_version = dataset_version_create(created_by=requested_by, title="Frozen for training")
        _dataset_check(version=dataset_version)
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    dataset_version=dataset_version,
                    profile=profile,
                    config=plan.config.to_dict(),
                    weights=plan.to_dict(),
                    requested_by=requested_by,
                )
        except IntegrityError as exc:  # a concurrent start won the partial unique constraint
            raise TrainingBusy(_busy_message()) from exc
        job_send_on_commit(job=run, task=tasks.training_run)
    return run


def _busy_message() -> str:
    active = TrainingRun.objects.filter(status__in=UNFINISHED).first()
    which = f"run {active.pk} is {active.status}" if active else "another run is queued or running"
    return f"Only one training run at a time: {which}. Wait for it to finish or cancel it."


def _busy_check() -> None:
    active = TrainingRun.objects.filter(status__in=UNFINISHED).first()
    if active is None:
        return
    if job_is_stale(active):
        # A dead worker's run must not block a new one until the reaper's next pass, and the one-at-a-time
        # constraint would refuse the new row while it is still running: fail it now, as the reaper would.
        jobs_fail_stale(model=TrainingRun)
        return
    raise TrainingBusy(_busy_message())


def _dataset_check(*, version: DatasetVersion) -> None:
    labels = set(version.entries.values_list("label", flat=True))
    if len(labels) < 2:
        raise TrainingRefused(f"Version {version.name} has {len(labels)} class(es); training needs at least 2.")
    counts = dict(version.entries.values("split").annotate(n=Count("id")).values_list("split", "n"))
    empty = [split.label.lower() for split in Split if not counts.get(split.value)]
    if empty:
        raise TrainingRefused(
            f"Version {version.name} has no images in its {' and '.join(empty)} split(s); "
            "label images from more cases before training."
        )


def training_run_cancel(*, run: TrainingRun, actor: AbstractBaseUser) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop after its current batch."""
    role_require(actor, Role.ADMIN, action="cancel training runs")
    if TrainingRun.objects.filter(pk=run.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        run.refresh_from_db()
        return run
    if not TrainingRun.objects.filter(pk=run.pk, status=JobStatus.RUNNING).update(cancel_requested=True):
        run.refresh_from_db()
        raise TrainingRefused(f"Run {run.pk} is already {run.get_status_display().lower()}.")
    run.refresh_from_db()
    return run
