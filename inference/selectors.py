"""Read-side queries over predictions: the confident-disagreement review list and scoring progress."""
from __future__ import annotations

from django.db.models import F, QuerySet

from annotation.models import LabelStatus
from inference.models import Prediction, ScoringJob
from training.models import ModelVersion


def review_list_confident_disagreements(*, model_version: ModelVersion, min_confidence: float = 0.9
                                        ) -> QuerySet[Prediction]:
    """Predictions of finally labeled images where the model confidently says another class (possible label
    errors worth a second look), most confident first."""
    return (
        Prediction.objects.filter(
            model_version=model_version, image__label_status=LabelStatus.FINAL, confidence__gte=min_confidence
        )
        .exclude(predicted_class=F("image__final_label"))
        .select_related("image", "image__final_label", "predicted_class")
        .order_by("-confidence", "image_id")
    )


def scoring_job_latest(*, model_version: ModelVersion) -> ScoringJob | None:
    """The version's most recent scoring pass (running or finished), for a progress display."""
    return ScoringJob.objects.filter(model_version=model_version).order_by("-started_at", "-id").first()
