"""Archive downloads for the pages and the API: a redirect to a pre-signed URL of the object store (S3), streamed and
resumable with single-range HTTP Range requests (RFC 9110), or handed to the reverse proxy.

With HEMALOOP_RELEASES_X_ACCEL_REDIRECT_PREFIX = "/protected-media/", nginx needs
`location /protected-media/ { internal; alias <MEDIA_ROOT>/; }`; it then serves the file and its ranges itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase

from core.storage import storage_download_url
from releases import conf, selectors
from releases.models import DatasetArchive

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Unsatisfiable(Exception):
    pass


def archive_download_response(*, request: HttpRequest, archive: DatasetArchive) -> HttpResponseBase:
    """The archive's bytes, whole (200) or one range of them (206); 416 for a range outside the file."""
    if not selectors.archive_downloadable(archive=archive):
        raise Http404("This version's archive has not been built, or its file is missing: build it again.")
    size = archive.size_bytes
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{archive.sha256}"',
        "Content-Disposition": f'attachment; filename="{archive_file_label(archive)}"',
        "Cache-Control": "private, no-transform",
    }
    # The object store serves the bytes (and their ranges) itself when it signs URLs: no worker of the web server
    # is held for the minutes a multi-gigabyte download takes.
    url = storage_download_url(
        name=archive.file_name, filename=archive_file_label(archive), content_type="application/zip"
    )
    if url is not None:
        return HttpResponseRedirect(url, headers={"Cache-Control": "private, no-store"})
    prefix = conf.x_accel_redirect_prefix()
    if prefix:
        response = HttpResponse(content_type="application/zip", headers=headers)
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(archive.file_name)
        return response
    try:
        byte_range = _range_requested(request=request, size=size, etag=headers["ETag"])
    except _Unsatisfiable:
        return HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = byte_range or (0, size - 1)
    body = iter(()) if request.method == "HEAD" else _file_chunks(name=archive.file_name, start=start, end=end)
    response = StreamingHttpResponse(
        body, status=206 if byte_range else 200, content_type="application/zip", headers=headers
    )
    response["Content-Length"] = str(end - start + 1)
    if byte_range:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


def archive_file_label(archive: DatasetArchive) -> str:
    """The name a download is saved under."""
    return archive.file_name.rsplit("/", 1)[-1]


def _range_requested(*, request: HttpRequest, size: int, etag: str) -> tuple[int, int] | None:
    """(first, last) byte of a single satisfiable range; None to send the whole file."""
    header = request.headers.get("Range", "").strip()
    if not header or not header.lower().startswith("bytes="):
        return None  # no range, or a unit other than bytes: RFC 9110 says to ignore it
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client holds part of another file (or only a date): send it all again
    if "," in header:
        return None  # several ranges: allowed to answer with the whole file, which resumes nothing wrongly
    match = _RANGE.match(header.replace(" ", ""))
    if not match or match.groups() == ("", ""):
        raise _Unsatisfiable
    first, last = match.groups()
    if first == "":
        suffix = int(last)  # "bytes=-500": the last 500 bytes
        if suffix == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _Unsatisfiable
    return start, end


def _file_chunks(*, name: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end (inclusive) of a stored file; the file closes when the response does."""
    with default_storage.open(name, "rb") as source:
        source.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = source.read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
