"""Releases pages: the version list, cutting a version, a version with its archive, downloads, diffs."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from core.permissions import role_required
from core.roles import Role
from releases import selectors
from releases.downloads import archive_download_response
from releases.forms import DiffForm, VersionCreateForm
from releases.services.archive_request import archive_build_start
from releases.services.versions import ReleaseEmpty, dataset_version_create

RELEASE_ROLES = (Role.RESEARCHER, Role.ADMIN)
VERSIONS_PER_PAGE = 25
DIFF_ROWS_SHOWN = 500


@require_GET
@role_required(*RELEASE_ROLES)
def version_list(request):
    page = Paginator(selectors.version_list(), VERSIONS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "releases/version_list.html", {"page": page, "preview": selectors.release_preview()})


@require_http_methods(["GET", "POST"])
@role_required(*RELEASE_ROLES)
def version_create(request):
    form = VersionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            version = dataset_version_create(created_by=request.user, **form.cleaned_data)
        except ReleaseEmpty as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Version {version.name} is frozen with {version.image_count} images.")
            return redirect("releases:version_detail", number=version.number)
    return render(request, "releases/version_form.html", {"form": form, "preview": selectors.release_preview()})


@require_GET
@role_required(*RELEASE_ROLES)
def version_detail(request, number: int):
    version = selectors.version_get(number=number)
    context = {
        "version": version,
        "balance": selectors.version_balance(version=version),
        "leakage": selectors.version_leakage(version=version),
        "progress": selectors.archive_progress(archive=version.archive),
        "downloadable": selectors.archive_downloadable(archive=version.archive),
    }
    return render(request, "releases/version_detail.html", context)


@require_POST
@role_required(*RELEASE_ROLES)
def archive_build(request, number: int):
    archive = archive_build_start(version=selectors.version_get(number=number), requested_by=request.user)
    messages.info(request, f"Archive of v{number}: {archive.get_status_display().lower()}.")
    return redirect("releases:version_detail", number=number)


@require_safe
@role_required(*RELEASE_ROLES)
def archive_download(request, number: int):
    return archive_download_response(request=request, archive=selectors.version_get(number=number).archive)


@require_GET
@role_required(*RELEASE_ROLES)
def version_diff(request):
    numbers = list(selectors.version_list().values_list("number", flat=True))
    form = DiffForm.for_request(request.GET, numbers=numbers)
    diff = None
    if form.is_bound and form.is_valid():
        old, new = (selectors.version_get(number=form.cleaned_data[key]) for key in ("old", "new"))
        diff = selectors.version_diff(old=old, new=new)
    context = {"form": form, "diff": diff, "changes": diff.changes[:DIFF_ROWS_SHOWN] if diff else []}
    return render(request, "releases/version_diff.html", context)
