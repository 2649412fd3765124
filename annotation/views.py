"""Annotation pages: the image list, role-checked image files, import pages, and the labeling and agreement
pages (their JavaScript calls the JSON API). The image page and the consensus page show the model's opinion, so
they live on the dashboard floor (dashboard/views.py) under the same URLs."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods

from annotation import selectors
from annotation.files import image_file_response
from annotation.forms import AgreementFilterForm, BatchItemFilterForm, BatchUploadForm, ImageFilterForm
from annotation.models import CellImage
from annotation.pages import taxonomy_context
from annotation.selectors.agreement import agreement_stats
from annotation.services.image_files import ImageFileUnavailable, image_file_problem_recheck
from annotation.services.imports.batches import ImportRejected, import_batch_create_from_upload
from annotation.services.labeling import undo_deadline
from core.permissions import role_required
from core.roles import Role

IMAGES_PER_PAGE = 48
BATCHES_PER_PAGE = 25
REPORT_ROWS_PER_PAGE = 200
NEAR_DUPLICATES_SHOWN = 200
# Every role sees pixels (annotators label them); labels and metadata stay on the role-checked pages.
ANY_ROLE = tuple(Role)


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def image_list(request):
    form = ImageFilterForm(request.GET)
    if form.is_valid():
        images = selectors.image_list(**form.selector_filters(), hidden_from=request.user)
    else:
        images = CellImage.objects.none()
    page = Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "annotation/image_list.html", {"form": form, "page": page})


@require_GET
@role_required(*ANY_ROLE)
def image_file(request, image_id: int):
    return _file_or_refusal(user=request.user, image_id=image_id, thumbnail=False)


@require_GET
@role_required(*ANY_ROLE)
def image_thumbnail(request, image_id: int):
    return _file_or_refusal(user=request.user, image_id=image_id, thumbnail=True)


def _file_or_refusal(*, user, image_id: int, thumbnail: bool) -> HttpResponse:
    try:
        return image_file_response(user=user, image_id=image_id, thumbnail=thumbnail)
    except ImageFileUnavailable as exc:
        return HttpResponse(exc.message, status=exc.status, content_type="text/plain; charset=utf-8")


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def image_file_problems(request):
    """Cells whose stored file could not be served, newest first; POST checks again after files were restored."""
    if request.method == "POST":
        restored = image_file_problem_recheck()
        messages.success(request, f"Checked again: {restored} file{'s' if restored != 1 else ''} can be served again.")
        return redirect("annotation:image_file_problems")
    page = Paginator(selectors.image_file_problem_list(), REPORT_ROWS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "annotation/image_file_problems.html", {"page": page})


@require_GET
@role_required(Role.ADMIN)
def batch_list(request):
    page = Paginator(selectors.batch_list(), BATCHES_PER_PAGE).get_page(request.GET.get("page"))
    rows = [(batch, selectors.batch_progress(batch=batch)) for batch in page]
    return render(request, "annotation/batch_list.html", {"page": page, "rows": rows})


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def batch_create(request):
    form = BatchUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            batch = import_batch_create_from_upload(created_by=request.user, **form.cleaned_data)
        except ImportRejected as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Upload received: {batch.source_name}.")
            return redirect("annotation:batch_detail", batch_id=batch.pk)
    return render(request, "annotation/batch_form.html", {"form": form})


@require_GET
@role_required(Role.ADMIN)
def batch_detail(request, batch_id: int):
    batch = selectors.batch_get(batch_id=batch_id)
    item_filter = BatchItemFilterForm(request.GET)
    outcome = item_filter.cleaned_data["outcome"] if item_filter.is_valid() else None
    items = Paginator(selectors.batch_items(batch=batch, outcome=outcome), REPORT_ROWS_PER_PAGE)
    context = {
        "batch": batch,
        "progress": selectors.batch_progress(batch=batch),
        "outcome": outcome or "",
        "items": items.get_page(request.GET.get("page")),
        "near_duplicate_threshold": settings.HEMALOOP_NEAR_DUPLICATE_SIMILARITY,
        "near_duplicates": selectors.batch_near_duplicates(batch=batch, hidden_from=request.user)[
            :NEAR_DUPLICATES_SHOWN
        ],
    }
    return render(request, "annotation/batch_detail.html", context)


# --- labeling, agreement ----------------------------------------------------------------------


@require_GET
@role_required(Role.ANNOTATOR)
def label(request):
    """The blind labeling page. It shows pixels and the annotator's own progress, nothing else:
    no colleague's label, consensus, reference, analyzer class or model prediction."""
    context = taxonomy_context() | {
        "progress": selectors.labeling_progress(annotator=request.user),
        "undo_until": undo_deadline(annotator=request.user),
        "undo_grace_seconds": settings.HEMALOOP_UNDO_GRACE_SECONDS,
        "api": {
            "next": reverse("annotation_api:queue_next"),
            "labels": reverse("annotation_api:labels"),
            "skip": reverse("annotation_api:queue_skip"),
            "undo": reverse("annotation_api:label_undo"),
            "flag": reverse("annotation_api:label_flag"),
            "progress": reverse("annotation_api:queue_progress"),
        },
    }
    return render(request, "annotation/label.html", context)


@require_GET
@role_required(Role.RESEARCHER, Role.ADJUDICATOR, Role.ADMIN)
def agreement(request):
    """Inter-annotator agreement for the chosen batch and dates, with the confusion heatmap."""
    form = AgreementFilterForm(request.GET)
    stats = agreement_stats(**form.selector_filters(), hidden_from=request.user) if form.is_valid() else None
    heatmap_url = None
    if stats is not None:
        query = form.query_params()
        heatmap_url = reverse("annotation_api:agreement_heatmap") + (f"?{urlencode(query)}" if query else "")
    filtered = form.is_valid() and bool(form.query_params())
    return render(
        request,
        "annotation/agreement.html",
        {
            "form": form,
            "stats": stats,
            "heatmap_url": heatmap_url,
            "filtered": filtered,
        },
    )
