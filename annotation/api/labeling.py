"""Labeling, consensus, history and agreement API. Annotators see only their own labels."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import selectors
from annotation.api.serializers import CellClassField, ConsensusItemOutput
from annotation.models import CellImage
from annotation.selectors.agreement import agreement_heatmap_png, agreement_stats
from annotation.selectors.blinding import image_require_visible
from annotation.services.consensus import consensus_resolve, label_reopen
from annotation.services.labeling import (
    LabelingError,
    QueueItem,
    annotation_flag,
    annotation_submit,
    annotation_undo,
    queue_next,
    queue_skip,
)
from core.permissions import roles_permission
from core.roles import Role

IsAnnotator = roles_permission(Role.ANNOTATOR)
IsAdjudicator = roles_permission(Role.ADJUDICATOR, Role.ADMIN)
CanSeeLabels = roles_permission(Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN)


class QueueItemOutput(serializers.Serializer):
    image = serializers.CharField(source="image.public_id", help_text="The cell's public id (random, not sequential).")
    image_url = serializers.SerializerMethodField()
    width = serializers.IntegerField(source="image.width")
    height = serializers.IntegerField(source="image.height")
    lease_expires_at = serializers.DateTimeField()

    def get_image_url(self, item: QueueItem) -> str:
        return reverse("annotation_api:cell_file", kwargs={"public_id": item.image.public_id})


class CellRefField(serializers.CharField):
    """A cell as annotators know it: its public id. A database id or a hash is just an id that matches no cell."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("help_text", "The cell's public id, as queue/next/ returned it.")
        super().__init__(**kwargs)


class NextCellApi(APIView):
    """Hold the next cell for me under a lease. 204 when nothing is left to label."""

    permission_classes = [IsAnnotator]

    @extend_schema(request=None, responses={200: QueueItemOutput, 204: OpenApiResponse(description="Queue empty")})
    def post(self, request):
        item = queue_next(annotator=request.user)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(QueueItemOutput(item).data)


class LabelInput(serializers.Serializer):
    image = CellRefField()
    cell_class = CellClassField(help_text='A taxonomy code, or "unclassifiable".')
    duration_ms = serializers.IntegerField(min_value=0, max_value=24 * 3600 * 1000, required=False)


class MyLabelOutput(serializers.Serializer):
    # No label id: database ids are sequential across all annotators, so they would count colleagues' labels.
    image = serializers.CharField(source="image.public_id", help_text="The cell's public id.")
    cell_class = CellClassField()
    created_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField(allow_null=True)
    undone = serializers.SerializerMethodField()

    def get_undone(self, annotation) -> bool:
        return annotation.undone_at is not None


class LabelRefusedOutput(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    next = QueueItemOutput(allow_null=True)


class LabelListCreateApi(APIView):
    """GET: my own labels, newest first. POST: submit a blind label for a cell I hold."""

    permission_classes = [IsAnnotator]

    @extend_schema(responses=MyLabelOutput(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.annotation_list_mine(annotator=request.user), request, view=self)
        return paginator.get_paginated_response(MyLabelOutput(page, many=True).data)

    @extend_schema(request=LabelInput, responses={201: MyLabelOutput, 400: None, 409: LabelRefusedOutput})
    def post(self, request):
        data = LabelInput(data=request.data)
        data.is_valid(raise_exception=True)
        cell = selectors.cell_find(public_id=data.validated_data["image"])
        try:
            annotation = annotation_submit(
                image_id=cell.pk if cell else None,
                annotator=request.user,
                cell_class=data.validated_data["cell_class"],
                duration_ms=data.validated_data.get("duration_ms"),
            )
        except LabelingError as refused:
            # The refusal comes with the cell to label instead, as queue/next would answer (null: none left).
            refusal = {"detail": refused.message, "code": refused.code, "next": queue_next(annotator=request.user)}
            return Response(LabelRefusedOutput(refusal).data, status=refused.status)
        return Response(MyLabelOutput(annotation).data, status=status.HTTP_201_CREATED)


class ImageRefInput(serializers.Serializer):
    image = CellRefField()


class SkipApi(APIView):
    """Pass on a cell: it goes back to the queue for others."""

    permission_classes = [IsAnnotator]

    @extend_schema(request=ImageRefInput, responses={204: None})
    def post(self, request):
        data = ImageRefInput(data=request.data)
        data.is_valid(raise_exception=True)
        cell = selectors.cell_get(public_id=data.validated_data["image"])
        queue_skip(image_id=cell.pk, annotator=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UndoApi(APIView):
    """Take back my last label within the grace period, whatever its cell became; the cell is held for me again."""

    permission_classes = [IsAnnotator]

    @extend_schema(request=None, responses={200: QueueItemOutput, 404: None, 409: None})
    def post(self, request):
        item = annotation_undo(annotator=request.user)
        return Response(QueueItemOutput(item).data)


class FlagInput(serializers.Serializer):
    image = CellRefField(required=False, help_text="The public id of a cell I labeled; default: my last label's cell.")
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class FlagApi(APIView):
    """Ask an adjudicator to look at my label again (when it is too late to undo it)."""

    permission_classes = [IsAnnotator]

    @extend_schema(request=FlagInput, responses={204: None, 404: None})
    def post(self, request):
        data = FlagInput(data=request.data)
        data.is_valid(raise_exception=True)
        annotation_flag(
            annotator=request.user, public_id=data.validated_data.get("image"), note=data.validated_data["note"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProgressOutput(serializers.Serializer):
    today = serializers.IntegerField()
    total = serializers.IntegerField()
    waiting = serializers.IntegerField()


class ProgressApi(APIView):
    permission_classes = [IsAnnotator]

    @extend_schema(responses=ProgressOutput)
    def get(self, request):
        return Response(ProgressOutput(selectors.labeling_progress(annotator=request.user)).data)


class ConsensusListApi(APIView):
    """Cells whose two labels differ, oldest first, with both labels, who gave them and, for a cell whose final
    label was re-opened, who re-opened it, when and why."""

    permission_classes = [IsAdjudicator]

    @extend_schema(responses=ConsensusItemOutput(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.consensus_list(viewer=request.user), request, view=self)
        items = selectors.consensus_items(images=page)
        return paginator.get_paginated_response(ConsensusItemOutput(items, many=True).data)


class ResolveInput(serializers.Serializer):
    cell_class = CellClassField(help_text='The final class (any class), or "unclassifiable".')
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class FinalOutput(serializers.Serializer):
    image = serializers.IntegerField(source="id")
    label_status = serializers.CharField()
    final_label = CellClassField()
    final_method = serializers.CharField()


class ConsensusResolveApi(APIView):
    """Record the final class of a cell in consensus. 409 when another adjudicator was first."""

    permission_classes = [IsAdjudicator]

    @extend_schema(request=ResolveInput, responses={200: FinalOutput, 409: None})
    def post(self, request, image_id: int):
        get_object_or_404(CellImage, pk=image_id)
        data = ResolveInput(data=request.data)
        data.is_valid(raise_exception=True)
        image = consensus_resolve(image_id=image_id, adjudicator=request.user, **data.validated_data)
        return Response(FinalOutput(image).data)


class ReopenInput(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class ReopenApi(APIView):
    """Send a final label back to consensus, with a reason kept in the history."""

    permission_classes = [IsAdjudicator]

    @extend_schema(request=ReopenInput, responses={200: FinalOutput, 409: None})
    def post(self, request, image_id: int):
        get_object_or_404(CellImage, pk=image_id)
        data = ReopenInput(data=request.data)
        data.is_valid(raise_exception=True)
        image = label_reopen(image_id=image_id, actor=request.user, reason=data.validated_data["reason"])
        return Response(FinalOutput(image).data)


class EventOutput(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField(source="get_kind_display")
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)
    cell_class = CellClassField()
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class ImageHistoryApi(APIView):
    """Every label, resolution and correction of a cell: who, what, when, why."""

    permission_classes = [CanSeeLabels]

    @extend_schema(responses=EventOutput(many=True))
    def get(self, request, image_id: int):
        image = get_object_or_404(CellImage, pk=image_id)
        image_require_visible(user=request.user, image=image)
        return Response(EventOutput(selectors.image_history(image=image), many=True).data)


class AgreementFilterInput(serializers.Serializer):
    batch = serializers.IntegerField(required=False)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)


def _agreement_for(request):
    filters = AgreementFilterInput(data=request.query_params)
    filters.is_valid(raise_exception=True)
    data = filters.validated_data
    return agreement_stats(
        batch_id=data.get("batch"),
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
        hidden_from=request.user,
    )


class AgreementApi(APIView):
    """Cohen's kappa overall and per annotator pair, per-class agreement, confusion matrix."""

    permission_classes = [CanSeeLabels]

    @extend_schema(parameters=[AgreementFilterInput], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(_agreement_for(request).__dict__)


class AgreementHeatmapApi(APIView):
    """The annotator-vs-annotator confusion matrix as a PNG heatmap (same filters)."""

    permission_classes = [CanSeeLabels]

    @extend_schema(parameters=[AgreementFilterInput], responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request):
        return HttpResponse(agreement_heatmap_png(_agreement_for(request)), content_type="image/png")
