"""Reads for labeling: an annotator's own labels and progress, an image's labels and history."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from annotation.models import Annotation, CellImage, LabelEvent, LabelStatus


def annotation_list_mine(*, annotator) -> QuerySet[Annotation]:
    """Only this annotator's labels, newest first: nothing about colleagues, the consensus or the final label, and
    no order that follows database ids (ties, which one person's labels hardly have, go by the random public id)."""
    return (
        Annotation.objects.filter(annotator=annotator)
        .select_related("cell_class", "image")
        .order_by("-created_at", "image__public_id", "undone_at")
    )


def labeling_progress(*, annotator) -> dict[str, int]:
    """Labeled today, labeled in total, and cells still waiting that this annotator could label (not those whose
    file is known to be unavailable: the queue does not hand them out)."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = Annotation.objects.filter(annotator=annotator, undone_at__isnull=True)
    waiting = (
        CellImage.objects.filter(label_status=LabelStatus.NEEDS_LABELS, file_problem__isnull=True)
        .exclude(Exists(Annotation.objects.filter(image=OuterRef("pk"), annotator=annotator, undone_at__isnull=True)))
        .count()
    )
    return {"today": mine.filter(created_at__gte=today).count(), "total": mine.count(), "waiting": waiting}


def annotation_list_for_image(*, image: CellImage) -> QuerySet[Annotation]:
    """The image's live labels with who gave them; for adjudicators, researchers and admins only."""
    return (
        Annotation.objects.filter(image=image, undone_at__isnull=True)
        .select_related("annotator", "cell_class")
        .order_by("created_at", "id")
    )


def image_history(*, image: CellImage) -> QuerySet[LabelEvent]:
    """Every label, undo, decision and re-opening of the image, oldest first."""
    return image.events.select_related("actor", "cell_class").order_by("created_at", "id")
