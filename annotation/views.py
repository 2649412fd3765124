"""Annotation pages: the image list and detail, role-checked image files, and the import pages."""
from __future__ import annotations

from django.contrib import messages
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import role_required
from accounts.roles import Role
from annotation import selectors
from annotation.forms import BatchItemFilterForm, BatchUploadForm, ImageFilterForm
from annotation.models import CellImage
from annotation.services.imports import ImportRejected, import_batch_create_from_upload

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


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER)
def image_detail(request, image_id: int):
    image = selectors.image_get(image_id=image_id)
    return render(request, "annotation/image_detail.html", {"image": image})


def _image_file_response(*, image_id: int, thumbnail: bool) -> FileResponse:
    image = selectors.image_get(image_id=image_id)
    path = selectors.image_file_path(image=image, thumbnail=thumbnail)
    if not path or not default_storage.exists(path):
        raise Http404("The image file is missing from storage.")
    # Named by hash, never by the uploaded name: folder and file names often spell out the class.
    filename = f"{image.sha256}{'-thumb' if thumbnail else ''}.{path.rsplit('.', 1)[-1].lower()}"
    response = FileResponse(default_storage.open(path, "rb"), filename=filename)
    patch_cache_control(response, private=True, max_age=3600)
    return response


@require_GET
@role_required(*ANY_ROLE)
def image_file(request, image_id: int):
    return _image_file_response(image_id=image_id, thumbnail=False)


@require_GET
@role_required(*ANY_ROLE)
def image_thumbnail(request, image_id: int):
    return _image_file_response(image_id=image_id, thumbnail=True)


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
