"""Training pages: Retrain (start and list runs), a run's live progress, a model version's report and plots."""

from __future__ import annotations

from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.jobs import job_progress
from core.permissions import role_required
from core.roles import Role
from releases.services.versions import ReleaseEmpty
from training import selectors
from training.errors import TrainingRefused
from training.forms import RunStartForm
from training.services.runs import (
    training_default_profile,
    training_run_cancel,
    training_run_start,
    training_weights_plans,
)
from training.services.versions import model_version_activate

READ_ROLES = (Role.RESEARCHER, Role.ADMIN)


def _run_or_404(run_id: int):
    run = selectors.training_run_get(run_id=run_id)
    if run is None:
        raise Http404("No such training run.")
    return run


def _version_or_404(version_id: int):
    version = selectors.model_version_get(version_id=version_id)
    if version is None:
        raise Http404("No such model version.")
    return version


@require_GET
@role_required(*READ_ROLES)
def training_home(request):
    # Said before anyone starts a run: which weights each profile's members would start from right now.
    plans = training_weights_plans()
    default = training_default_profile(plans=plans)
    active = selectors.model_version_active()
    context = {
        "form": RunStartForm(initial={"profile": default.profile}),
        "default_profile": default,
        "weights_plans": plans,
        "runs": selectors.training_run_list()[:50],
        "versions": selectors.model_version_list()[:50],
        "heads": selectors.model_version_head_list()[:20],
        "head_policy": selectors.head_policy(active=active),
        "active": active,
        "section": "training",
    }
    return render(request, "training/home.html", context)


@require_POST
@role_required(Role.ADMIN)
def run_start(request):
    form = RunStartForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a dataset version and a profile.")
        return redirect("training:home")
    try:
        run = training_run_start(requested_by=request.user, **form.cleaned_data)
    except (TrainingRefused, ReleaseEmpty) as exc:
        messages.error(request, str(exc))
        return redirect("training:home")
    messages.success(request, f"Run {run.pk} is queued on {run.dataset_version}.")
    return redirect("training:run_detail", run_id=run.pk)


@require_GET
@role_required(*READ_ROLES)
def run_detail(request, run_id: int):
    run = _run_or_404(run_id)
    context = {"run": run, "progress": job_progress(run), "section": "training"}
    return render(request, "training/run_detail.html", context)


@require_POST
@role_required(Role.ADMIN)
def run_cancel(request, run_id: int):
    try:
        run = training_run_cancel(run=_run_or_404(run_id), actor=request.user)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
        return redirect("training:run_detail", run_id=run_id)
    messages.info(request, f"Run {run.pk}: {'cancelled' if run.is_finished else 'stopping after this batch'}.")
    return redirect("training:run_detail", run_id=run_id)


@require_GET
@role_required(*READ_ROLES)
def model_detail(request, version_id: int):
    version = _version_or_404(version_id)
    context = {"version": version, "report": selectors.model_version_report(version=version), "section": "training"}
    return render(request, "training/model_detail.html", context)


@require_POST
@role_required(Role.ADMIN)
def model_activate(request, version_id: int):
    version = model_version_activate(version=_version_or_404(version_id), actor=request.user)
    messages.success(request, f"Model version {version.pk} is now active.")
    return redirect("training:model_detail", version_id=version.pk)


@require_GET
@role_required(*READ_ROLES)
def model_plot(request, version_id: int, name: str):
    # Plots live in the media storage, which is never served publicly: this view is the role check.
    stored = _version_or_404(version_id).plots.get(name)
    if stored is None:
        raise Http404("No such plot.")
    try:
        handle = default_storage.open(stored, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("The plot file is missing.") from None
    return FileResponse(handle, content_type="image/png")
