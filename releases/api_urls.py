"""Releases API routes under /api/releases/."""

from django.urls import path

from releases import api

app_name = "releases_api"
urlpatterns = [
    path("versions/", api.VersionListCreateApi.as_view(), name="version_list"),
    path("versions/<int:number>/", api.VersionDetailApi.as_view(), name="version_detail"),
    path("versions/<int:number>/manifest/", api.ManifestApi.as_view(), name="manifest"),
    path("versions/<int:number>/archive/", api.ArchiveApi.as_view(), name="archive"),
    path("versions/<int:number>/archive/download/", api.ArchiveDownloadApi.as_view(), name="archive_download"),
    path("versions/<int:number>/diff/<int:other>/", api.VersionDiffApi.as_view(), name="version_diff"),
]
