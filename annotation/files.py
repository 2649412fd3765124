"""Streaming stored image files to logged-in users; shared by the pages and the API (no public media URLs)."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from django.utils.cache import patch_cache_control

from annotation import selectors
from annotation.models import ImageFileProblem
from annotation.services.image_files import ImageFileUnavailable, image_file_problem_record


def image_file_response(*, image_id: int, thumbnail: bool) -> FileResponse:
    """The file as a download; ImageFileUnavailable (410) when storage lacks it or cannot open it."""
    image = selectors.image_get(image_id=image_id)
    path = selectors.image_file_path(image=image, thumbnail=thumbnail)
    try:
        if not path or not default_storage.exists(path):
            image_file_problem_record(image=image, reason=ImageFileProblem.Reason.MISSING, path=path)
            raise ImageFileUnavailable("The image file is missing from storage.", code="image_file_missing")
        handle = default_storage.open(path, "rb")
    except OSError as exc:
        image_file_problem_record(image=image, reason=ImageFileProblem.Reason.UNREADABLE, path=path, detail=str(exc))
        raise ImageFileUnavailable("The image file cannot be read.", code="image_file_unreadable") from exc
    # Named by hash, never by the uploaded name: folder and file names often spell out the class.
    filename = f"{image.sha256}{'-thumb' if thumbnail else ''}.{path.rsplit('.', 1)[-1].lower()}"
    response = FileResponse(handle, filename=filename)
    patch_cache_control(response, private=True, max_age=3600)
    return response
