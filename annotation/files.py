"""Streaming stored image files to logged-in users; shared by the pages and the API (no public media URLs)."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.utils.cache import patch_cache_control

from annotation import selectors


def image_file_response(*, image_id: int, thumbnail: bool) -> FileResponse:
    image = selectors.image_get(image_id=image_id)
    path = selectors.image_file_path(image=image, thumbnail=thumbnail)
    if not path or not default_storage.exists(path):
        raise Http404("The image file is missing from storage.")
    # Named by hash, never by the uploaded name: folder and file names often spell out the class.
    filename = f"{image.sha256}{'-thumb' if thumbnail else ''}.{path.rsplit('.', 1)[-1].lower()}"
    response = FileResponse(default_storage.open(path, "rb"), filename=filename)
    patch_cache_control(response, private=True, max_age=3600)
    return response
