"""Annotation API: taxonomy, cell images, import batches with their per-file reports and live progress."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.files import cell_file_response, image_file_response
from annotation.models import CellClass, CellImage, ImportBatch, ImportItem
from annotation.selectors.blinding import image_require_visible
from annotation.services.imports.batches import import_batch_create_from_upload
from core.permissions import roles_permission
from core.roles import Role
from core.serializers import JobProgressOutput

# --- serializers -----------------------------------------------------------------------------------


class CellClassOutput(serializers.Serializer):
    code = serializers.SlugField()
    name = serializers.CharField()
    group = serializers.ChoiceField(choices=CellClass.Group.choices)
    hotkey = serializers.CharField()
    order = serializers.IntegerField()
    is_active = serializers.BooleanField()


class ImageFilterInput(serializers.Serializer):
    case = serializers.PrimaryKeyRelatedField(queryset=selectors.case_list(), required=False, help_text="Case id.")
    batch = serializers.PrimaryKeyRelatedField(
        queryset=selectors.batch_list(), required=False, help_text="Import batch id."
    )
    reference_label = serializers.SlugRelatedField(
        slug_field="code", queryset=selectors.taxonomy_list(), required=False, help_text="Cell class code."
    )
    status = serializers.ChoiceField(
        choices=[(s.value, selectors.IMAGE_STATUS_LABELS[s]) for s in selectors.ImageStatus],
        required=False,
        help_text="`unlabeled`: still needs expert labels; `final`: has a final label.",
    )

    def validate_status(self, value: str) -> selectors.ImageStatus:
        return selectors.ImageStatus(value)


class ImageOutput(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="annotation_api:image_detail", lookup_url_kwarg="image_id")
    file_url = serializers.HyperlinkedIdentityField(view_name="annotation:image_file", lookup_url_kwarg="image_id")
    thumbnail_url = serializers.HyperlinkedIdentityField(
        view_name="annotation:image_thumbnail", lookup_url_kwarg="image_id"
    )
    case = serializers.SlugRelatedField(slug_field="code", read_only=True)
    analyzer_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    reference_label = serializers.SlugRelatedField(slug_field="code", read_only=True)
    final_label = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = CellImage
        fields = [
            "id",
            "url",
            "sha256",
            "original_name",
            "format",
            "width",
            "height",
            "size_bytes",
            "case",
            "batch",
            "analyzer_class",
            "reference_label",
            "label_status",
            "final_label",
            "final_method",
            "priority",
            "created_at",
            "file_url",
            "thumbnail_url",
        ]
        read_only_fields = fields


class BatchOutput(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="annotation_api:batch_detail", lookup_url_kwarg="batch_id")
    items_url = serializers.HyperlinkedIdentityField(
        view_name="annotation_api:batch_items", lookup_url_kwarg="batch_id"
    )
    progress_url = serializers.HyperlinkedIdentityField(
        view_name="annotation_api:batch_progress", lookup_url_kwarg="batch_id"
    )
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ImportBatch
        fields = [
            "id",
            "url",
            "source_name",
            "requested_by",
            "requested_at",
            "trusted",
            "case_from_folder",
            "status",
            "total",
            "done",
            "imported",
            "duplicates",
            "rejected",
            "skipped",
            "error",
            "started_at",
            "heartbeat_at",
            "finished_at",
            "items_url",
            "progress_url",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "done": {"help_text": "Files reported so far (imported, duplicate or rejected)."},
            "skipped": {"help_text": "Companion files (README, CSV, hidden files) that are not images."},
        }


class BatchItemFilterInput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=ImportItem.Outcome.choices, required=False)


class BatchItemOutput(serializers.ModelSerializer):
    image_url = serializers.HyperlinkedRelatedField(
        source="image", view_name="annotation_api:image_detail", lookup_url_kwarg="image_id", read_only=True
    )

    class Meta:
        model = ImportItem
        fields = ["id", "name", "outcome", "reason", "image", "image_url"]
        read_only_fields = fields
        extra_kwargs = {"image": {"help_text": "The imported image, or for a duplicate the image it duplicates."}}


class BatchCreateInput(serializers.Serializer):
    upload = serializers.FileField(help_text="Zip archive of single-cell images.")
    csv_upload = serializers.FileField(required=False, help_text="Optional metadata CSV.")
    trusted = serializers.BooleanField(default=False, help_text="Reference labels become final labels.")
    case_from_folder = serializers.BooleanField(default=False, help_text="Top-level folder names are case ids.")


class BatchProgressOutput(JobProgressOutput):
    """The progress every background job reports (core.jobs.job_progress), then the batch's own counts."""

    done = serializers.IntegerField(help_text="Files reported so far (imported, duplicate or rejected).")
    total = serializers.IntegerField(help_text="Files in the source, and CSV rows that match none; 0 until it is read.")
    imported = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Companion files (README, CSV, hidden files) that are not images.")
    near_duplicates = serializers.IntegerField(
        help_text="Cells of this import nearly identical in the embedding index to another cell (the same cell imaged "
        "twice, other bytes); found after the import's embedding pass, never blocking it."
    )


# --- views -----------------------------------------------------------------------------------------


class ImagePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ReportPagination(PageNumberPagination):
    page_size = 200
    page_size_query_param = "page_size"
    max_page_size = 1000


def _paginated(*, request: Request, view: APIView, queryset, serializer_class) -> Response:
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)


class TaxonomyListApi(APIView):
    permission_classes = [roles_permission(*Role)]

    @extend_schema(responses=CellClassOutput(many=True), summary="The cell classes, in display order")
    def get(self, request):
        return Response(CellClassOutput(selectors.taxonomy_list(), many=True).data)


class ImageListApi(APIView):
    # Annotators label blind: they never list images with their reference, analyzer or final labels.
    permission_classes = [roles_permission(Role.ADMIN, Role.RESEARCHER)]
    pagination_class = ImagePagination

    @extend_schema(parameters=[ImageFilterInput], responses=ImageOutput(many=True), summary="Cell images, filtered")
    def get(self, request):
        filters = ImageFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        images = selectors.image_list(**filters.validated_data, hidden_from=request.user)
        return _paginated(request=request, view=self, queryset=images, serializer_class=ImageOutput)


class ImageDetailApi(APIView):
    permission_classes = [roles_permission(Role.ADMIN, Role.RESEARCHER)]

    @extend_schema(responses=ImageOutput, summary="One cell image with its metadata and labels")
    def get(self, request, image_id: int):
        image = selectors.image_get(image_id=image_id)
        image_require_visible(user=request.user, image=image)
        return Response(ImageOutput(image, context={"request": request}).data)


class BatchListApi(APIView):
    permission_classes = [roles_permission(Role.ADMIN)]
    pagination_class = PageNumberPagination
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses=BatchOutput(many=True), summary="Import batches, newest first")
    def get(self, request):
        return _paginated(request=request, view=self, queryset=selectors.batch_list(), serializer_class=BatchOutput)

    @extend_schema(
        request={"multipart/form-data": BatchCreateInput},
        responses={
            201: BatchOutput,
            400: OpenApiResponse(description='Invalid fields, or the upload was rejected: `{"detail": why}`.'),
        },
        summary="Upload a zip of cell images; the import runs in the background",
    )
    def post(self, request):
        serializer = BatchCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        batch = import_batch_create_from_upload(created_by=request.user, **serializer.validated_data)
        return Response(BatchOutput(batch, context={"request": request}).data, status=status.HTTP_201_CREATED)


class BatchDetailApi(APIView):
    permission_classes = [roles_permission(Role.ADMIN)]

    @extend_schema(responses=BatchOutput, summary="One import batch with its counts")
    def get(self, request, batch_id: int):
        batch = selectors.batch_get(batch_id=batch_id)
        return Response(BatchOutput(batch, context={"request": request}).data)


class BatchItemListApi(APIView):
    permission_classes = [roles_permission(Role.ADMIN)]
    pagination_class = ReportPagination

    @extend_schema(
        parameters=[BatchItemFilterInput], responses=BatchItemOutput(many=True), summary="The per-file report"
    )
    def get(self, request, batch_id: int):
        filters = BatchItemFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        items = selectors.batch_items(batch=selectors.batch_get(batch_id=batch_id), **filters.validated_data)
        return _paginated(request=request, view=self, queryset=items, serializer_class=BatchItemOutput)


class BatchProgressApi(APIView):
    permission_classes = [roles_permission(Role.ADMIN)]

    @extend_schema(responses=BatchProgressOutput, summary="Progress of an import, polled by the batch page")
    def get(self, request, batch_id: int):
        progress = selectors.batch_progress(batch=selectors.batch_get(batch_id=batch_id))
        return Response(BatchProgressOutput(progress).data)


_FILE_UNAVAILABLE = OpenApiResponse(
    description='The stored file is missing or unreadable: `{"detail": why, "code": '
    '"image_file_missing" | "image_file_unreadable"}`; admins see the cell on the unavailable-files page.'
)


class ImageFileApi(APIView):
    """The image bytes by database id, for staff roles (404, as for an unknown id, to annotator-only users and for a
    cell hidden from the caller); labels are never part of it."""

    permission_classes = [roles_permission(*Role)]

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY, 404: None, 410: _FILE_UNAVAILABLE})
    def get(self, request: Request, image_id: int):
        return image_file_response(user=request.user, image_id=image_id, thumbnail=False)


class CellFileApi(APIView):
    """The pixels of a cell by its public id, as annotators label them: metadata removed, named cell.<ext>."""

    permission_classes = [roles_permission(*Role)]

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY, 404: None, 410: _FILE_UNAVAILABLE})
    def get(self, request: Request, public_id: str):
        return cell_file_response(public_id=public_id)
