"""Releases API (researchers and admins): dataset versions, their manifests and diffs, archive builds and downloads."""

from __future__ import annotations

import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from core.permissions import roles_permission
from core.roles import Role
from core.serializers import JobProgressOutput
from releases import selectors
from releases.downloads import archive_download_response
from releases.models import DatasetArchive, DatasetVersion, ManifestEntry, Split
from releases.services.archive_request import archive_build_start
from releases.services.versions import dataset_version_create

RELEASE_ROLES = roles_permission(Role.RESEARCHER, Role.ADMIN)

# --- serializers -----------------------------------------------------------------------------------


class ArchiveOutput(JobProgressOutput):
    """The progress shape every background job shares (core.jobs.job_progress), with the archive's own fields."""

    status = serializers.CharField(help_text="not_built, queued, running, succeeded, failed or cancelled")
    done = serializers.IntegerField(help_text="Members (files) of the zip written so far.")
    total = serializers.IntegerField(help_text="Members the zip will have: the images and five text files.")
    version = serializers.IntegerField()
    sha256 = serializers.CharField(allow_blank=True, help_text="SHA-256 of the archive once built: publish it.")
    size_bytes = serializers.IntegerField(allow_null=True)
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, progress: dict) -> str | None:
        if progress["status"] != DatasetArchive.Status.SUCCEEDED:
            return None
        return reverse(
            "releases_api:archive_download", kwargs={"number": progress["version"]}, request=self.context["request"]
        )


class VersionOutput(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, help_text="Previous version number.")
    archive = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "number",
            "url",
            "title",
            "notes",
            "created_by",
            "created_at",
            "parent",
            "image_count",
            "case_count",
            "test_fraction",
            "validation_fraction",
            "class_counts",
            "archive",
        ]
        read_only_fields = fields

    def get_url(self, version: DatasetVersion) -> str:
        request = self.context["request"]
        return reverse("releases_api:version_detail", kwargs={"number": version.number}, request=request)

    @extend_schema_field(ArchiveOutput)
    def get_archive(self, version: DatasetVersion) -> dict:
        return ArchiveOutput(selectors.archive_progress(archive=version.archive), context=self.context).data


class NearDuplicateAcrossOutput(serializers.Serializer):
    sha256 = serializers.CharField()
    split = serializers.CharField()
    other_sha256 = serializers.CharField()
    other_split = serializers.CharField()
    similarity = serializers.FloatField()


class LeakageOutput(serializers.Serializer):
    cases_in_several_splits = serializers.IntegerField(help_text="Must be 0.")
    shared_cases = serializers.ListField(child=serializers.CharField(), help_text="The first few such cases.")
    earlier_test_in_training = serializers.IntegerField(
        help_text="Images in train or validation whose case or image was in an earlier version's test set; must be 0."
    )
    near_duplicates_across_splits = serializers.IntegerField(
        help_text="Near-duplicate pairs (the same cell imaged twice, found in the embedding index) with the two "
        "cells in different splits; must be 0."
    )
    near_duplicate_pairs = NearDuplicateAcrossOutput(many=True, help_text="The first few such pairs.")
    clean = serializers.BooleanField()


class VersionDetailOutput(VersionOutput):
    leakage = serializers.SerializerMethodField()

    class Meta(VersionOutput.Meta):
        fields = [*VersionOutput.Meta.fields, "taxonomy", "sources", "agreement", "licence", "citation", "leakage"]
        read_only_fields = fields

    @extend_schema_field(LeakageOutput)
    def get_leakage(self, version: DatasetVersion) -> dict:
        return LeakageOutput(selectors.version_leakage(version=version)).data


class VersionCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class ManifestFilterInput(serializers.Serializer):
    split = serializers.ChoiceField(choices=Split.choices, required=False)


class ManifestEntryOutput(serializers.ModelSerializer):
    label_method = serializers.CharField(source="method")

    class Meta:
        model = ManifestEntry
        fields = ["path", "sha256", "split", "label", "label_method", "expert_labels", "case_id"]
        read_only_fields = fields


class ClassDiffOutput(serializers.Serializer):
    code = serializers.CharField()
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    relabeled_away = serializers.IntegerField()
    relabeled_to = serializers.IntegerField()


class DiffChangeOutput(serializers.Serializer):
    sha256 = serializers.CharField()
    change = serializers.ChoiceField(choices=["added", "removed", "relabeled"])
    old_label = serializers.CharField(allow_blank=True)
    new_label = serializers.CharField(allow_blank=True)


class RelabelPairOutput(serializers.Serializer):
    old_label = serializers.CharField()
    new_label = serializers.CharField()
    images = serializers.IntegerField()


class VersionDiffOutput(serializers.Serializer):
    old = serializers.IntegerField(source="old.number")
    new = serializers.IntegerField(source="new.number")
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    relabeled = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    per_class = ClassDiffOutput(many=True)
    relabel_pairs = serializers.SerializerMethodField()
    changes = DiffChangeOutput(many=True)

    @extend_schema_field(RelabelPairOutput(many=True))
    def get_relabel_pairs(self, diff: selectors.VersionDiff) -> list[dict]:
        return [{"old_label": old, "new_label": new, "images": n} for old, new, n in diff.relabel_pairs]


class ZipRenderer(BaseRenderer):
    """Lets a client that asks for application/zip through content negotiation; errors still come back as JSON."""

    media_type = "application/zip"
    format = "zip"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else json.dumps(data).encode()


# --- views -----------------------------------------------------------------------------------------


class ManifestPagination(PageNumberPagination):
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


class VersionListCreateApi(APIView):
    permission_classes = [RELEASE_ROLES]
    pagination_class = PageNumberPagination

    @extend_schema(responses=VersionOutput(many=True), summary="Dataset versions, newest first")
    def get(self, request: Request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.version_list(), request, view=self)
        return paginator.get_paginated_response(VersionOutput(page, many=True, context={"request": request}).data)

    @extend_schema(
        request=VersionCreateInput,
        responses={201: VersionDetailOutput, 400: OpenApiResponse(description="No image has a final label yet.")},
        summary="Cut a new version: freeze every final label, with its split",
    )
    def post(self, request: Request):
        serializer = VersionCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = dataset_version_create(created_by=request.user, **serializer.validated_data)
        version = selectors.version_get(number=version.number)
        return Response(VersionDetailOutput(version, context={"request": request}).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(APIView):
    permission_classes = [RELEASE_ROLES]

    @extend_schema(responses=VersionDetailOutput, summary="One version: counts, taxonomy, sources, leakage check")
    def get(self, request: Request, number: int):
        version = selectors.version_get(number=number)
        return Response(VersionDetailOutput(version, context={"request": request}).data)


class ManifestApi(APIView):
    permission_classes = [RELEASE_ROLES]
    pagination_class = ManifestPagination

    @extend_schema(
        parameters=[ManifestFilterInput],
        responses=ManifestEntryOutput(many=True),
        summary="A version's manifest, in archive order",
    )
    def get(self, request: Request, number: int):
        filters = ManifestFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = selectors.manifest_entries(version=selectors.version_get(number=number), **filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(ManifestEntryOutput(page, many=True).data)


class ArchiveApi(APIView):
    permission_classes = [RELEASE_ROLES]

    @extend_schema(responses=ArchiveOutput, summary="Build progress of a version's archive, polled by its page")
    def get(self, request: Request, number: int):
        progress = selectors.archive_progress(archive=selectors.version_get(number=number).archive)
        return Response(ArchiveOutput(progress, context={"request": request}).data)

    @extend_schema(request=None, responses={202: ArchiveOutput}, summary="Build the archive in the background")
    def post(self, request: Request, number: int):
        archive = archive_build_start(version=selectors.version_get(number=number), requested_by=request.user)
        progress = selectors.archive_progress(archive=archive)
        return Response(ArchiveOutput(progress, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ArchiveDownloadApi(APIView):
    permission_classes = [RELEASE_ROLES]
    renderer_classes = [JSONRenderer, ZipRenderer]

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiTypes.BINARY,
            (206, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="One range (Range header)."),
            404: OpenApiResponse(description="Not built yet."),
            416: OpenApiResponse(description="The range lies outside the archive."),
        },
        summary="Download the archive; resumable with a single-range Range request (ETag = its SHA-256)",
    )
    def get(self, request: Request, number: int):
        return archive_download_response(request=request, archive=selectors.version_get(number=number).archive)


class VersionDiffApi(APIView):
    permission_classes = [RELEASE_ROLES]

    @extend_schema(responses=VersionDiffOutput, summary="Images added, removed and relabeled between two versions")
    def get(self, request: Request, number: int, other: int):
        diff = selectors.version_diff(old=selectors.version_get(number=number), new=selectors.version_get(number=other))
        return Response(VersionDiffOutput(diff).data)
