"""Active-learning pages under /inference/: scoring (with live progress and Rescore), the review list of possible
label errors, and the admin's active-learning settings. Login is checked by the middleware, roles here."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.permissions import role_required
from core.roles import Role
from inference import selectors
from inference.errors import RefreshRefused, ScoringRefused
from inference.forms import ActiveLearningSettingsForm
from inference.models import ActiveLearningSettings
from inference.services.settings import al_settings_update
from inference.services.starts import head_refresh_start, queue_priorities_refresh_start, scoring_start
from training.selectors import model_version_active

# The review list shows final labels and the model's opinion: never for annotators (they label blind).
REVIEW_ROLES = (Role.ADJUDICATOR, Role.ADMIN, Role.RESEARCHER)
REVIEW_ROWS_PER_PAGE = 48


@require_GET
@role_required(Role.ADMIN)
def scoring(request):
    jobs = selectors.scoring_job_list()
    context = {
        "active": model_version_active(),
        "rows": [(job, selectors.scoring_job_progress(job=job)) for job in jobs],
        "spaces": selectors.index_space_list(),
        "index_rows": [(job, selectors.embedding_job_progress(job=job)) for job in selectors.embedding_job_list()],
        "refresh_rows": [(job, selectors.head_refresh_progress(job=job)) for job in selectors.head_refresh_list()],
        "refresh_every": settings.HEMALOOP_HEAD_REFRESH_EVERY,
        "section": "scoring",
    }
    return render(request, "inference/scoring.html", context)


@require_POST
@role_required(Role.ADMIN)
def rescore(request):
    try:
        job = scoring_start(actor=request.user)
    except ScoringRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Scoring job {job.pk} is queued for model version {job.model_version_id}.")
    return redirect("inference:scoring")


@require_GET
@role_required(Role.ADMIN)
def scoring_progress(request, job_id: int):
    job = selectors.scoring_job_get(job_id=job_id)
    if job is None:
        raise Http404("No such scoring job.")
    return JsonResponse(selectors.scoring_job_progress(job=job))


# The pages whose Refresh button posts here, by the `back` field they send: a fixed list, never a URL.
REFRESH_RETURN_PAGES = {"training": "training:home"}


@require_POST
@role_required(Role.ADMIN)
def refresh(request):
    try:
        job = head_refresh_start(actor=request.user)
    except RefreshRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Refresh {job.pk} is queued: a head trained on every final label, then the queue.")
    return redirect(REFRESH_RETURN_PAGES.get(request.POST.get("back", ""), "inference:scoring"))


@require_GET
@role_required(Role.ADMIN)
def index_progress(request, job_id: int):
    job = selectors.embedding_job_get(job_id=job_id)
    if job is None:
        raise Http404("No such embedding job.")
    return JsonResponse(selectors.embedding_job_progress(job=job))


@require_GET
@role_required(Role.ADMIN)
def refresh_progress(request, job_id: int):
    job = selectors.head_refresh_get(job_id=job_id)
    if job is None:
        raise Http404("No such refresh.")
    return JsonResponse(selectors.head_refresh_progress(job=job))


@require_GET
@role_required(*REVIEW_ROLES)
def review(request):
    active = model_version_active()
    page = Paginator(selectors.review_list(viewer=request.user, model_version=active), REVIEW_ROWS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {"active": active, "page": page, "settings": selectors.al_settings_get(), "section": "review"}
    return render(request, "inference/review.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def al_settings(request):
    current = selectors.al_settings_get()
    form = ActiveLearningSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        try:
            al_settings_update(actor=request.user, **{name: form.cleaned_data[name] for name in form.Meta.fields})
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Active-learning settings saved.")
            if "apply" in request.POST:
                _priorities_apply(request)
            return redirect("inference:settings")
    context = {
        "form": form,
        "current": current,
        "active": model_version_active(),
        "cold_start": _cold_start_words(),
        "section": "settings",
    }
    return render(request, "inference/settings.html", context)


@require_POST
@role_required(Role.ADMIN)
def priorities_apply(request):
    _priorities_apply(request)
    return redirect("inference:settings")


def _cold_start_words() -> str:
    if selectors.al_settings_get().cold_start == ActiveLearningSettings.ColdStart.TYPICAL:
        return "cold start (typical cells from the embedding index; stratified random across cases until it has them)"
    return "cold start (stratified random across cases)"


def _priorities_apply(request) -> None:
    # Re-ordering a large pool takes longer than a request should: the inference queue does it.
    version = queue_priorities_refresh_start(actor=request.user)
    done = "each cell's new priority shows on its image page once the inference queue has run it."
    if version is None:
        messages.info(
            request, f"No model is active: re-ordering the queue by the {_cold_start_words()} is queued; {done}"
        )
    else:
        messages.success(
            request, f"Re-ordering the labeling queue by model version {version.pk}'s predictions is queued; {done}"
        )
