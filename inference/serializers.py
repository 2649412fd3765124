"""Input and output shapes of the inference API (predictions on uploads, the model's opinion on a stored image and
the similar cells beside it)."""

from __future__ import annotations

import base64

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class PredictInput(serializers.Serializer):
    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        allow_empty=False,
        help_text="One or more image files (JPEG, PNG, BMP or TIFF), repeated in the multipart field 'images'.",
    )
    heatmap = serializers.BooleanField(
        default=False,
        help_text="Add each image's Grad-CAM overlay for its predicted class as a base64 PNG.",
    )


class ModelVersionRef(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ImagePredictionOutput(serializers.Serializer):
    file = serializers.CharField(source="file_name", help_text="The uploaded file's name.")
    probabilities = serializers.DictField(
        child=serializers.FloatField(),
        help_text="Calibrated ensemble probability per class code; sums to 1.",
    )
    predicted_class = serializers.CharField(help_text="Class code with the highest probability.")
    confidence = serializers.FloatField(help_text="Top-1 probability.")
    margin = serializers.FloatField(help_text="Top-1 minus top-2 probability; small means uncertain.")
    entropy = serializers.FloatField(help_text="Shannon entropy of the probabilities, in nats.")
    heatmap_png = serializers.SerializerMethodField(
        help_text="Grad-CAM overlay for the predicted class, base64-encoded PNG of the image's size; "
        "null unless heatmap=true was sent.",
    )

    @extend_schema_field(OpenApiTypes.STR)
    def get_heatmap_png(self, prediction) -> str | None:
        return None if prediction.heatmap_png is None else base64.b64encode(prediction.heatmap_png).decode("ascii")


class PredictOutput(serializers.Serializer):
    model_version = serializers.SerializerMethodField()
    results = ImagePredictionOutput(many=True, help_text="One per uploaded image, in upload order.")

    @extend_schema_field(ModelVersionRef)
    def get_model_version(self, result) -> dict:
        return {"id": result.model_version_id, "name": result.model_version_name}


class ClassScoreOutput(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    probability = serializers.FloatField()


class OpinionOutput(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["ready", "no_model", "unavailable"],
        help_text="ready: top classes and heatmap follow; no_model: no version is active yet; "
        "unavailable: the active version's files cannot be read (message says why).",
    )
    message = serializers.CharField(allow_blank=True)
    model_version = ModelVersionRef(allow_null=True)
    top = ClassScoreOutput(many=True, help_text="The three most probable classes, best first (calibrated).")
    source = serializers.CharField(allow_blank=True, help_text="stored (the pool's scoring) or computed (now).")
    heatmap_url = serializers.CharField(allow_blank=True, help_text="Grad-CAM overlay PNG of the top class.")


class SimilarCellOutput(serializers.Serializer):
    id = serializers.IntegerField(source="image_id", help_text="Database id (the image page's).")
    final_label = serializers.SerializerMethodField()
    similarity = serializers.FloatField(help_text="Cosine similarity of the two index vectors.")
    thumbnail_url = serializers.SerializerMethodField()
    detail_url = serializers.SerializerMethodField()

    @extend_schema_field({"type": "object", "properties": {"code": {"type": "string"}, "name": {"type": "string"}}})
    def get_final_label(self, cell) -> dict:
        return {"code": cell.class_code, "name": cell.class_name}

    def get_thumbnail_url(self, cell) -> str:
        return reverse("annotation:image_thumbnail", kwargs={"image_id": cell.image_id})

    def get_detail_url(self, cell) -> str:
        return reverse("annotation:image_detail", kwargs={"image_id": cell.image_id})


class SimilarCellsOutput(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["ready", "no_index", "unavailable"],
        help_text="ready: the cell is in the embedding index (cells may still be empty: none has a final label); "
        "no_index: no index holds this cell yet; unavailable: the index's files cannot be read (message says why).",
    )
    message = serializers.CharField(allow_blank=True)
    cells = SimilarCellOutput(many=True, help_text="Cells with a final class, most similar first.")
