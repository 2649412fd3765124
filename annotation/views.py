"""Annotation pages: image list and detail (with label history and re-opening), role-checked image files,
import pages, and the labeling, consensus and agreement pages (their JavaScript calls the JSON API)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import selectors
from annotation.files import image_file_response
from annotation.forms import AgreementFilterForm, BatchItemFilterForm, BatchUploadForm, ImageFilterForm, ReopenForm
from annotation.models import CellClass, CellImage, LabelEvent, LabelStatus
from annotation.selectors.agreement import UNCLASSIFIABLE, agreement_stats
from annotation.services.consensus import label_reopen
from annotation.services.imports import ImportRejected, import_batch_create_from_upload
from annotation.services.labeling import LabelingError
from core.permissions import role_required
from core.roles import Role, user_has_role
from inference.explain import EXPLAIN_ROLES, heatmap_url, image_opinion_state, opinion_visible_to

IMAGES_PER_PAGE = 48
BATCHES_PER_PAGE = 25
REPORT_ROWS_PER_PAGE = 200
# Every role sees pixels (annotators label them); labels and metadata stay on the role-checked pages.
ANY_ROLE = tuple(Role)


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def image_list(request):
    form = ImageFilterForm(request.GET)
    images = selectors.image_list(**form.selector_filters()) if form.is_valid() else CellImage.objects.none()
    page = Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "annotation/image_list.html", {"form": form, "page": page})


def _image_detail_context(request, image: CellImage, *, reopen_form: ReopenForm | None = None) -> dict:
    can_reopen = user_has_role(request.user, Role.ADJUDICATOR, Role.ADMIN)
    return {
        "image": image,
        "history": selectors.image_history(image=image),
        "live_labels": selectors.annotation_list_for_image(image=image),
        "can_reopen": can_reopen and image.label_status == LabelStatus.FINAL,
        "reopen_form": reopen_form or ReopenForm(),
    } | _model_opinion_context(request, image)


def _model_opinion_context(request, image: CellImage) -> dict:
    """The model's opinion for those who may see it; for anyone else (annotators) not even an empty panel."""
    if not opinion_visible_to(user=request.user, image=image):
        return {"show_opinion": False}
    state = image_opinion_state(image=image)
    url = heatmap_url(image_id=image.id, opinion=state.opinion) if state.opinion else ""
    return {"show_opinion": True, "opinion_state": state, "heatmap_url": url}


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER, Role.ADJUDICATOR)
def image_detail(request, image_id: int):
    image = selectors.image_get(image_id=image_id)
    return render(request, "annotation/image_detail.html", _image_detail_context(request, image))


@require_POST
@role_required(Role.ADJUDICATOR, Role.ADMIN)
def image_reopen(request, image_id: int):
    """Send a final label back to the consensus queue (a reason is required); PRG back to the image."""
    image = selectors.image_get(image_id=image_id)
    form = ReopenForm(request.POST)
    if not form.is_valid():
        context = _image_detail_context(request, image, reopen_form=form)
        return render(request, "annotation/image_detail.html", context)
    try:
        label_reopen(image_id=image.id, actor=request.user, reason=form.cleaned_data["reason"])
    except LabelingError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Re-opened: the cell is back in the consensus queue.")
    return redirect("annotation:image_detail", image_id=image.id)


@require_GET
@role_required(*ANY_ROLE)
def image_file(request, image_id: int):
    return image_file_response(image_id=image_id, thumbnail=False)


@require_GET
@role_required(*ANY_ROLE)
def image_thumbnail(request, image_id: int):
    return image_file_response(image_id=image_id, thumbnail=True)


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
    }
    return render(request, "annotation/batch_detail.html", context)


# --- labeling, consensus, agreement ---------------------------------------------------------------


def _taxonomy_context() -> dict:
    """The active classes grouped Normal / Immature for the buttons, and as data for the hotkeys."""
    classes = list(selectors.taxonomy_list(active_only=True))
    groups = [(label, [c for c in classes if c.group == value]) for value, label in CellClass.Group.choices]
    return {
        "class_groups": [(label, members) for label, members in groups if members],
        "taxonomy": [{"code": c.code, "name": c.name, "hotkey": c.hotkey} for c in classes],
        "unclassifiable": UNCLASSIFIABLE,
    }


@require_GET
@role_required(Role.ANNOTATOR)
def label(request):
    """The blind labeling page. It shows pixels and the annotator's own progress, nothing else:
    no colleague's label, consensus, reference, analyzer class or model prediction."""
    context = _taxonomy_context() | {
        "progress": selectors.labeling_progress(annotator=request.user),
        "api": {
            "next": reverse("annotation_api:queue_next"),
            "labels": reverse("annotation_api:labels"),
            "skip": reverse("annotation_api:queue_skip"),
            "undo": reverse("annotation_api:label_undo"),
            "progress": reverse("annotation_api:queue_progress"),
        },
    }
    return render(request, "annotation/label.html", context)


def _reopened_event(image: CellImage) -> LabelEvent | None:
    """The re-opening that put this image back in the queue, if that (not a disagreement) is why it is here."""
    last = (
        selectors.image_history(image=image)
        .filter(kind__in=[LabelEvent.Kind.DISAGREEMENT, LabelEvent.Kind.REOPENED])
        .order_by("-created_at", "-id")
        .first()
    )
    return last if last is not None and last.kind == LabelEvent.Kind.REOPENED else None


def _consensus_item(image: CellImage, *, reopened: LabelEvent | None) -> dict:
    """One consensus item in the shape of /api/annotation/consensus/, plus why it was re-opened."""
    return {
        "image": image.id,
        "image_url": reverse("annotation:image_file", kwargs={"image_id": image.id}),
        "labels": [
            {
                "annotator": label.annotator.username,
                "cell_class": label.cell_class.code if label.cell_class else UNCLASSIFIABLE,
                "created_at": label.created_at.isoformat(),
                "duration_ms": label.duration_ms,
            }
            for label in image.live_labels
        ],
        "reopened": None
        if reopened is None
        else {
            "actor": reopened.actor.username if reopened.actor else None,
            "cell_class": reopened.cell_class.code if reopened.cell_class else UNCLASSIFIABLE,
            "note": reopened.note,
            "created_at": reopened.created_at.isoformat(),
        },
    }


@require_GET
@role_required(Role.ADJUDICATOR, Role.ADMIN)
def consensus(request):
    """The first cell of the consensus queue with both labels and who gave them; the page's script
    records the final class through the API and loads the next one."""
    image = selectors.consensus_next()
    reopened = _reopened_event(image) if image else None
    context = _taxonomy_context() | {
        "item": image,
        "reopened": reopened,
        "item_data": _consensus_item(image, reopened=reopened) if image else None,
        "waiting": selectors.consensus_count(),
        "api": {
            "list": reverse("annotation_api:consensus_list"),
            "resolve": reverse("annotation_api:consensus_resolve", kwargs={"image_id": 0}),
            "history": reverse("annotation_api:image_history", kwargs={"image_id": 0}),
            "detail": reverse("annotation:image_detail", kwargs={"image_id": 0}),
            "opinion": reverse("inference_api:image_opinion", kwargs={"image_id": 0}),
        },
        # Every cell here has both blind labels, so the model's opinion can no longer bias a label.
        "show_opinion": user_has_role(request.user, *EXPLAIN_ROLES),
    }
    return render(request, "annotation/consensus.html", context)


@require_GET
@role_required(Role.RESEARCHER, Role.ADJUDICATOR, Role.ADMIN)
def agreement(request):
    """Inter-annotator agreement for the chosen batch and dates, with the confusion heatmap."""
    form = AgreementFilterForm(request.GET)
    stats = agreement_stats(**form.selector_filters()) if form.is_valid() else None
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
