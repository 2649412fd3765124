"""Downloads: streamed, resumable with a single Range (206, Content-Range, 416), ETag = SHA-256, X-Accel option."""

from __future__ import annotations

import hashlib
import http.client
from urllib.parse import urlsplit

import pytest
from rest_framework.authtoken.models import Token

from releases.models import DatasetArchive


@pytest.fixture
def built(cell, case, cut, build):
    """(version, archive bytes) of a built archive."""
    for i in range(12):
        cell(["neutrophil", "monocyte"][i % 2], case=case(f"P-{i}"))
    version = cut()
    archive = build(version)
    from django.core.files.storage import default_storage

    with default_storage.open(archive.file_name, "rb") as stored:
        return version, stored.read()


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture(params=["page", "api"])
def download(request, researcher, client_for, api_client_for):
    """download(version, **headers) through the page URL (session) or the API URL (token)."""

    def get(version, method: str = "get", **headers):
        if request.param == "page":
            return getattr(client_for(researcher), method)(f"/releases/v{version.number}/download/", **headers)
        url = f"/api/releases/versions/{version.number}/archive/download/"
        return getattr(api_client_for(researcher), method)(url, **headers)

    return get


@pytest.mark.django_db
def test_the_whole_archive_with_its_etag_and_length(built, download):
    version, data = built
    response = download(version)
    assert response.status_code == 200
    assert _body(response) == data
    assert response["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Length"] == str(len(data))
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="hemaloop-dataset-v1.zip"'


@pytest.mark.django_db
def test_an_interrupted_download_resumes_from_where_it_stopped(built, download):
    version, data = built
    cut_at = len(data) // 3
    first = _body(download(version))[:cut_at]  # the connection dropped here
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    response = download(version, HTTP_RANGE=f"bytes={cut_at}-", HTTP_IF_RANGE=etag)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {cut_at}-{len(data) - 1}/{len(data)}"
    assert response["Content-Length"] == str(len(data) - cut_at)
    assert hashlib.sha256(first + _body(response)).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-199", 100, 199), ("bytes=-50", "-50", None), ("bytes=10-999999999", 10, None)],
)
def test_single_ranges(built, download, header, start, end):
    version, data = built
    response = download(version, HTTP_RANGE=header)
    if start == "-50":
        start, expected = len(data) - 50, data[-50:]
    else:
        expected = data[start:] if end is None else data[start : end + 1]
    assert response.status_code == 206
    assert _body(response) == expected
    assert response["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header", ["bytes={size}-", "bytes={size}-{size}", "bytes=-0", "bytes=abc", "bytes=5-2", "bytes=-"]
)
def test_unsatisfiable_or_malformed_ranges_get_416(built, download, header):
    version, data = built
    response = download(version, HTTP_RANGE=header.format(size=len(data)))
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_RANGE": "bytes=0-1,5-6"},
        {"HTTP_RANGE": "items=0-1"},
        {"HTTP_RANGE": "bytes=10-", "HTTP_IF_RANGE": '"another-file"'},
    ],
    ids=["multiple ranges", "unknown unit", "if-range of another file"],
)
def test_ranges_that_are_ignored_get_the_whole_file(built, download, headers):
    version, data = built
    response = download(version, **headers)
    assert response.status_code == 200
    assert _body(response) == data


@pytest.mark.django_db
def test_head_answers_the_headers_without_a_body(built, download):
    version, data = built
    response = download(version, method="head")
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(data))
    assert _body(response) == b""


@pytest.mark.django_db
def test_an_archive_not_built_yet_is_404(cell, cut, download):
    cell("neutrophil")
    assert download(cut()).status_code == 404


@pytest.mark.django_db
def test_a_missing_or_truncated_file_is_404_not_a_broken_download(built, download):
    from django.core.files.storage import default_storage

    version, data = built
    with default_storage.open(DatasetArchive.objects.get(version=version).file_name, "wb") as stored:
        stored.write(data[:100])
    assert download(version).status_code == 404


@pytest.mark.django_db
def test_the_reverse_proxy_serves_the_file_when_configured(built, download, settings):
    settings.HEMALOOP_RELEASES_X_ACCEL_REDIRECT_PREFIX = "/protected-media/"
    version, data = built
    response = download(version)
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == "/protected-media/releases/hemaloop-dataset-v1.zip"
    assert response["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert _body(response) == b""


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_real_http_download_dropped_half_way_resumes_with_range(built, live_server, researcher):
    version, data = built
    token = Token.objects.create(user=researcher).key
    url = urlsplit(f"{live_server.url}/api/releases/versions/{version.number}/archive/download/")
    headers = {"Authorization": f"Token {token}"}

    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", url.path, headers=headers)
    response = connection.getresponse()
    assert response.status == 200
    etag = response.getheader("ETag")
    received = response.read(len(data) // 2)
    connection.close()  # the network drops

    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", url.path, headers={**headers, "Range": f"bytes={len(received)}-", "If-Range": etag})
    response = connection.getresponse()
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes {len(received)}-{len(data) - 1}/{len(data)}"
    received += response.read()
    connection.close()
    assert received == data
    assert etag == f'"{hashlib.sha256(received).hexdigest()}"'
