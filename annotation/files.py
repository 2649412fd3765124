"""Streaming stored image files to logged-in users; shared by the pages and the API (no public media URLs)."""

from __future__ import annotations

import io
import mimetypes

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control

from annotation import selectors
from annotation.models import CellImage, ImageFileProblem
from annotation.services.image_files import ImageFileUnavailable, image_file_problem_record
from annotation.services.metadata_strip import MetadataStripFailed, metadata_strip
from core.roles import Role, user_has_role
from core.storage import storage_download_url


def image_file_response(*, user, image_id: int, thumbnail: bool) -> HttpResponseBase:
    """The file of the image with this database id, for staff roles; ImageFileUnavailable (410) when storage lacks
    it or cannot open it. A user with no staff role, or from whom the cell is hidden, gets 404 as for an unknown id.

    Anyone who also labels gets the pixels only (metadata removed, a name that says nothing); others get the stored
    bytes, named by their hash, or a redirect to a pre-signed URL of the object store for an original (see
    core.storage.storage_download_url).
    """
    image = selectors.image_get_for_staff(user=user, image_id=image_id)
    blind = user_has_role(user, Role.ANNOTATOR)
    if not blind and not thumbnail:
        # An original for someone who may know its hash: straight from the object store when it signs URLs. Never
        # for anyone who labels: the URL carries the hash, and their bytes must first lose their metadata.
        redirect = _redirect(image=image)
        if redirect is not None:
            return redirect
    path, handle = _open(image=image, thumbnail=thumbnail)
    if blind:
        return _blind_response(image=image, path=path, handle=handle)
    # Named by hash, never by the uploaded name: folder and file names often spell out the class.
    filename = f"{image.sha256}{'-thumb' if thumbnail else ''}.{path.rsplit('.', 1)[-1].lower()}"
    response = FileResponse(handle, filename=filename)
    patch_cache_control(response, private=True, max_age=3600)
    return response


def cell_file_response(*, public_id: str) -> FileResponse:
    """The pixels of the cell with this public id, for every role alike: the image annotators label. Metadata removed,
    named cell.<ext>; 404 for an unknown id (a database id or a hash included), 410 as above."""
    image = selectors.cell_get(public_id=public_id)
    path, handle = _open(image=image, thumbnail=False)
    return _blind_response(image=image, path=path, handle=handle)


def _redirect(*, image: CellImage) -> HttpResponseRedirect | None:
    path = selectors.image_file_path(image=image, thumbnail=False)
    if not path or not default_storage.exists(path):
        return None  # _open records the problem and answers 410
    filename = f"{image.sha256}.{path.rsplit('.', 1)[-1].lower()}"
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    url = storage_download_url(name=path, filename=filename, content_type=content_type)
    return HttpResponseRedirect(url) if url is not None else None


def _open(*, image: CellImage, thumbnail: bool):
    path = selectors.image_file_path(image=image, thumbnail=thumbnail)
    try:
        if not path or not default_storage.exists(path):
            image_file_problem_record(image=image, reason=ImageFileProblem.Reason.MISSING, path=path)
            raise ImageFileUnavailable("The image file is missing from storage.", code="image_file_missing")
        return path, default_storage.open(path, "rb")
    except OSError as exc:
        image_file_problem_record(image=image, reason=ImageFileProblem.Reason.UNREADABLE, path=path, detail=str(exc))
        raise ImageFileUnavailable("The image file cannot be read.", code="image_file_unreadable") from exc


def _blind_response(*, image: CellImage, path: str, handle) -> FileResponse:
    # Analyzers write their pre-class into EXIF, comments and PNG text; the SHA-256 finds a public data set's
    # labels; so neither reaches a person who may still label the cell. No ETag or Last-Modified either.
    with handle:
        data = handle.read()
    image_format = "JPEG" if path.lower().endswith((".jpg", ".jpeg")) else image.format
    try:
        stripped, extension = metadata_strip(data=data, image_format=image_format)
    except MetadataStripFailed as exc:
        # Never the original bytes instead: refused like an unreadable file, and listed for admins.
        image_file_problem_record(
            image=image, reason=ImageFileProblem.Reason.UNREADABLE, path=path, detail=f"metadata not removable: {exc}"
        )
        raise ImageFileUnavailable("The image file cannot be read.", code="image_file_unreadable") from exc
    response = FileResponse(io.BytesIO(stripped), filename=f"cell.{extension}")
    patch_cache_control(response, private=True, max_age=3600)
    return response
