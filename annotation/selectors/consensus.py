"""Reads for the consensus queue: which cells wait for an adjudicator, and each one as the consensus page and
the API show it (both labels with who gave them, and why a re-opened cell is back)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import F, Min, OuterRef, Prefetch, Q, QuerySet, Subquery, prefetch_related_objects

from annotation.models import Annotation, CellImage, LabelEvent, LabelStatus
from annotation.selectors.blinding import images_hidden_from

# The events that put a cell in the queue; the latest of them says why it is there now.
_QUEUE_ENTRIES = (LabelEvent.Kind.DISAGREEMENT, LabelEvent.Kind.REOPENED)
# A flag moves a final cell to the queue with no other event: it counts as an entry for the waiting time. A cell
# waits from the first of these after its last other event (a label, an undo, a decision: each leaves the cell out
# of the queue), so a flag on a cell already waiting does not send it to the back.
_WAITING_SINCE = (*_QUEUE_ENTRIES, LabelEvent.Kind.FLAGGED)


@dataclass(frozen=True)
class ConsensusItem:
    image: CellImage
    labels: list[Annotation]  # the live labels, oldest first, with annotator and class
    # Who re-opened the final label, when, what it was and why; None when a disagreement put the cell here.
    reopened: LabelEvent | None


def consensus_list(*, viewer) -> QuerySet[CellImage]:
    """Images whose labels disagree (or whose final label was re-opened or flagged), the longest waiting first (since
    the disagreement, re-opening or flag that put each in the queue, not by import); not those `viewer` labeled (unless
    HEMALOOP_ALLOW_SELF_ADJUDICATION): they are someone else's to resolve."""
    # Events are append-only, so ids order them even where two share a timestamp.
    last_out = (
        LabelEvent.objects.filter(image=OuterRef("pk"))
        .exclude(kind__in=_WAITING_SINCE)
        .order_by("-id")
        .values("id")[:1]
    )
    entered = Q(events__kind__in=_WAITING_SINCE) & (Q(last_out__isnull=True) | Q(events__id__gt=F("last_out")))
    return (
        CellImage.objects.filter(label_status=LabelStatus.CONSENSUS)
        .exclude(pk__in=images_hidden_from(user=viewer).values("pk"))
        .annotate(last_out=Subquery(last_out))
        .annotate(queued_at=Min("events__created_at", filter=entered))
        .order_by(F("queued_at").asc(nulls_first=True), "id")
    )


def consensus_items(*, images: Iterable[CellImage]) -> list[ConsensusItem]:
    """These images (a page of consensus_list()) as consensus items: two queries, however many images."""
    images = list(images)
    live = Annotation.objects.filter(undone_at__isnull=True).select_related("annotator", "cell_class")
    entries = LabelEvent.objects.filter(kind__in=_QUEUE_ENTRIES).select_related("actor", "cell_class")
    prefetch_related_objects(
        images,
        Prefetch("annotations", queryset=live.order_by("created_at", "id"), to_attr="_live_labels"),
        Prefetch("events", queryset=entries.order_by("-created_at", "-id"), to_attr="_queue_entries"),
    )
    return [
        ConsensusItem(image=image, labels=image._live_labels, reopened=_reopening(image._queue_entries))
        for image in images
    ]


def _reopening(entries_newest_first: list[LabelEvent]) -> LabelEvent | None:
    latest = entries_newest_first[0] if entries_newest_first else None
    return latest if latest is not None and latest.kind == LabelEvent.Kind.REOPENED else None


def consensus_next(*, viewer) -> ConsensusItem | None:
    """The oldest cell of `viewer`'s queue, or None when it is empty."""
    items = consensus_items(images=consensus_list(viewer=viewer)[:1])
    return items[0] if items else None


def consensus_count(*, viewer) -> int:
    return consensus_list(viewer=viewer).count()
