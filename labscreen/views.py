"""Lab-screen pages: imports (admins), studies (researchers and admins: start, follow, read, download, cancel) and
activating a study's screen model (admins). Annotators never reach any of them."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.conf import settings
from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.errors import AppError
from core.jobs import job_progress
from core.permissions import role_required
from core.roles import Role, user_has_role
from labscreen import selectors
from labscreen.forms import LabImportForm, StudyStartForm
from labscreen.ml.report import FILES
from labscreen.ml.study import METRICS, VARIANT_LABELS
from labscreen.services.imports import lab_import_run
from labscreen.services.screen import screen_activate
from labscreen.services.studies import lab_study_cancel, lab_study_start

READ_ROLES = (Role.RESEARCHER, Role.ADMIN)
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".png": "image/png"}


def _study_or_404(study_id: int):
    study = selectors.lab_study_get(study_id=study_id)
    if study is None:
        raise Http404("No such lab study.")
    return study


@require_GET
@role_required(*READ_ROLES)
def home(request):
    context = {
        "import_form": LabImportForm(),
        "study_form": StudyStartForm(),
        "imports": selectors.lab_import_list()[:20],
        "studies": selectors.lab_study_list()[:50],
        "screen": selectors.lab_screen_active(),
        "counts": selectors.cohort_counts(),
        "section": "labscreen",
    }
    return render(request, "labscreen/home.html", context)


@require_POST
@role_required(Role.ADMIN)
def import_create(request):
    form = LabImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose a CSV or XLSX file.")
        return redirect("labscreen:home")
    upload = form.cleaned_data["file"]
    if upload.size > settings.HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES:
        messages.error(
            request, f"The file has {upload.size} bytes; at most {settings.HEMALOOP_LABSCREEN_IMPORT_MAX_BYTES}."
        )
        return redirect("labscreen:home")
    try:
        lab_import = lab_import_run(
            data=upload.read(),
            source_name=upload.name,
            created_by=request.user,
            create_cases=form.cleaned_data["create_cases"],
            synthetic=form.cleaned_data["synthetic"],
        )
    except AppError as exc:
        messages.error(request, str(exc))
        return redirect("labscreen:home")
    (messages.success if lab_import.status == "succeeded" else messages.error)(request, lab_import.summary)
    return redirect("labscreen:import_detail", import_id=lab_import.pk)


@require_GET
@role_required(Role.ADMIN)
def import_detail(request, import_id: int):
    lab_import = selectors.lab_import_get(import_id=import_id)
    if lab_import is None:
        raise Http404("No such lab import.")
    context = {"lab_import": lab_import, "rows": lab_import.report.all()[:2000], "section": "labscreen"}
    return render(request, "labscreen/import_detail.html", context)


@require_POST
@role_required(*READ_ROLES)
def study_start(request):
    form = StudyStartForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, "Check the study settings: " + "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items())
        )
        return redirect("labscreen:home")
    try:
        study = lab_study_start(requested_by=request.user, title=form.cleaned_data["title"], **form.study_settings())
    except AppError as exc:
        messages.error(request, str(exc))
        return redirect("labscreen:home")
    return redirect("labscreen:study_detail", study_id=study.pk)


def _rows(results: dict) -> list[dict]:
    """One row per model: both variants' mean ± SD per metric, the difference and the AUC intervals."""
    variants = results.get("variants") or {}
    if not variants:
        return []
    return [
        {
            "name": name,
            "label": data["label"],
            "published": variants["published"][name],
            "leak_free": data,
            "difference": results["difference"][name],
            "metrics": [
                (metric, variants["published"][name]["mean"][metric], variants["published"][name]["sd"][metric],
                 data["mean"][metric], data["sd"][metric], results["difference"][name][metric])
                for metric in METRICS
            ],
        }
        for name, data in variants["leak_free"].items()
    ]  # fmt: skip


@require_GET
@role_required(*READ_ROLES)
def study_detail(request, study_id: int):
    study = _study_or_404(study_id)
    results = study.results or {}
    downloads = [(name, FILES[name][0], FILES[name][1]) for name in FILES if name in study.files]
    context = {
        "study": study,
        "progress": job_progress(study),
        "results": results,
        "rows": _rows(results),
        "metrics": METRICS,
        "variant_labels": VARIANT_LABELS,
        "correlations": (results.get("correlations") or [])[:40],
        "importance": (results.get("importance") or [])[:20],
        "downloads": downloads,
        "plots": [
            name
            for name in ("roc_published", "roc_leak_free", "metrics", "correlations_plot", "calibration_plot")
            if name in study.files
        ],
        "can_cancel": not study.is_finished
        and (request.user.pk == study.requested_by_id or user_has_role(request.user, Role.ADMIN)),
        "section": "labscreen",
    }
    return render(request, "labscreen/study_detail.html", context)


@require_POST
@role_required(*READ_ROLES)
def study_cancel(request, study_id: int):
    try:
        study = lab_study_cancel(study=_study_or_404(study_id), actor=request.user)
    except AppError as exc:
        messages.error(request, str(exc))
        return redirect("labscreen:study_detail", study_id=study_id)
    messages.info(
        request, f"Study {study.pk}: {'cancelled' if study.is_finished else 'stopping after this model fit'}."
    )
    return redirect("labscreen:study_detail", study_id=study_id)


@require_POST
@role_required(Role.ADMIN)
def study_activate(request, study_id: int):
    try:
        study = screen_activate(study=_study_or_404(study_id), actor=request.user)
    except AppError as exc:
        messages.error(request, str(exc))
        return redirect("labscreen:study_detail", study_id=study_id)
    messages.success(request, f"Study {study.pk}'s {study.results.get('screen_model')} is now the lab screen.")
    return redirect("labscreen:study_detail", study_id=study.pk)


@require_GET
@role_required(*READ_ROLES)
def study_file(request, study_id: int, name: str):
    # Files live in the storage, which is never served publicly: this view is the role check. The screen model
    # (a pickle) is never handed out.
    study = _study_or_404(study_id)
    stored = study.files.get(name)
    if stored is None or name == "model":
        raise Http404("No such file.")
    path = PurePosixPath(stored)
    try:
        handle = default_storage.open(stored, "rb")
    except FileNotFoundError:
        raise Http404("The file is missing.") from None
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(
        handle,
        content_type=content_type,
        as_attachment=path.suffix != ".png",
        filename=f"study-{study.pk}-{path.name}",
    )
