"""Output shapes that the API and the pages share: a cell class as its code, and a consensus item (the consensus
page embeds the same JSON the consensus API lists, so its script handles both alike)."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.models import CellClass
from annotation.selectors.agreement import UNCLASSIFIABLE
from annotation.selectors.consensus import ConsensusItem


@extend_schema_field(OpenApiTypes.STR)
class CellClassField(serializers.Field):
    """A taxonomy code, or "unclassifiable" (stored as no class)."""

    default_error_messages = {"unknown": "Unknown cell class {value!r}."}

    def to_internal_value(self, data):
        if data == UNCLASSIFIABLE:
            return None
        cls = CellClass.objects.filter(code=data, is_active=True).first()
        if cls is None:
            self.fail("unknown", value=data)
        return cls

    def to_representation(self, value):
        return value.code if value else UNCLASSIFIABLE


class LabelOutput(serializers.Serializer):
    annotator = serializers.CharField(source="annotator.username")
    cell_class = CellClassField()
    created_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField(allow_null=True)
    flagged = serializers.SerializerMethodField(help_text="Its annotator asked for another look.")

    def get_flagged(self, annotation) -> bool:
        return annotation.flagged_at is not None


class ReopenedOutput(serializers.Serializer):
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)
    cell_class = CellClassField(help_text="The final label that was re-opened.")
    note = serializers.CharField(help_text="Why it was re-opened.")
    created_at = serializers.DateTimeField()


class ConsensusItemOutput(serializers.Serializer):
    image = serializers.IntegerField(source="image.id")
    image_url = serializers.SerializerMethodField()
    labels = LabelOutput(many=True)
    reopened = ReopenedOutput(
        allow_null=True, help_text="Set when a re-opened final label, not a disagreement, put the cell in the queue."
    )

    def get_image_url(self, item: ConsensusItem) -> str:
        return reverse("annotation_api:image_file", kwargs={"image_id": item.image.id})
