"""Inter-annotator agreement: Cohen's kappa overall and per annotator pair, per-class agreement,
the annotator-vs-annotator confusion matrix and disagreement rates (scikit-learn)."""

from __future__ import annotations

import io
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from annotation.models import Annotation, CellClass
from annotation.selectors.blinding import images_hidden_from

UNCLASSIFIABLE = "unclassifiable"


@dataclass
class AgreementStats:
    labels: list[str]
    names: dict[str, str]
    n_images: int
    kappa: float | None
    observed_agreement: float | None
    pairs: list[dict] = field(default_factory=list)
    per_class: list[dict] = field(default_factory=list)
    per_annotator: list[dict] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)


def _kappa(a: list[str], b: list[str]) -> float | None:
    if not a:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns, then returns NaN, when kappa is undefined
        value = cohen_kappa_score(a, b)
    # kappa is undefined when both raters used a single identical category throughout
    return None if math.isnan(value) else round(float(value), 4)


def agreement_pairs(
    *, batch_id: int | None = None, date_from: date | None = None, date_to: date | None = None, hidden_from=None
):
    """[(image_id, (annotator_a, code_a), (annotator_b, code_b))] for images with exactly two live labels,
    in the order the labels were given. Dates filter on the day of the second label. With `hidden_from` (a person
    who asks), not the cells hidden from them: a disagreement of theirs would show the colleague's label."""
    live = Annotation.objects.filter(undone_at__isnull=True).select_related("annotator", "cell_class")
    if hidden_from is not None:
        live = live.exclude(image__in=images_hidden_from(user=hidden_from).values("pk"))
    if batch_id is not None:
        live = live.filter(image__batch_id=batch_id)
    by_image: dict[int, list[Annotation]] = defaultdict(list)
    for annotation in live.order_by("image_id", "created_at", "id"):
        by_image[annotation.image_id].append(annotation)
    pairs = []
    for image_id, labels in by_image.items():
        if len(labels) != 2:
            continue
        day = timezone.localdate(labels[1].created_at)
        if (date_from and day < date_from) or (date_to and day > date_to):
            continue
        pairs.append(
            (image_id, *[(a.annotator.username, a.cell_class.code if a.cell_class else UNCLASSIFIABLE) for a in labels])
        )
    return pairs


def agreement_stats(
    *, batch_id: int | None = None, date_from: date | None = None, date_to: date | None = None, hidden_from=None
) -> AgreementStats:
    classes = list(CellClass.objects.order_by("order"))
    labels = [c.code for c in classes] + [UNCLASSIFIABLE]
    names = {c.code: c.name for c in classes} | {UNCLASSIFIABLE: "Unclassifiable"}
    pairs = agreement_pairs(batch_id=batch_id, date_from=date_from, date_to=date_to, hidden_from=hidden_from)
    first = [p[1][1] for p in pairs]
    second = [p[2][1] for p in pairs]
    stats = AgreementStats(
        labels=labels,
        names=names,
        n_images=len(pairs),
        kappa=_kappa(first, second),
        observed_agreement=round(float(np.mean([a == b for a, b in zip(first, second, strict=True)])), 4)
        if pairs
        else None,
    )

    by_pair: dict[tuple[str, str], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    per_annotator: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # labels, disagreements
    for _, (user_a, code_a), (user_b, code_b) in pairs:
        # Order each pair by name so A/B and B/A pool into one row.
        (ua, ca), (ub, cb) = sorted([(user_a, code_a), (user_b, code_b)])
        by_pair[(ua, ub)][0].append(ca)
        by_pair[(ua, ub)][1].append(cb)
        for user in (user_a, user_b):
            per_annotator[user][0] += 1
            per_annotator[user][1] += code_a != code_b
    stats.pairs = [
        {
            "annotators": list(key),
            "n": len(a),
            "kappa": _kappa(a, b),
            "agreement": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 4),
        }
        for key, (a, b) in sorted(by_pair.items())
    ]
    stats.per_annotator = [
        {"annotator": user, "n": n, "disagreements": d, "disagreement_rate": round(d / n, 4)}
        for user, (n, d) in sorted(per_annotator.items())
    ]
    for code in labels:
        either = sum(a == code or b == code for a, b in zip(first, second, strict=True))
        both = sum(a == code and b == code for a, b in zip(first, second, strict=True))
        stats.per_class.append(
            {
                "code": code,
                "name": names[code],
                "n": either,
                "agreement": round(both / either, 4) if either else None,
                "disagreement_rate": round(1 - both / either, 4) if either else None,
            }
        )
    stats.confusion = (
        confusion_matrix(first, second, labels=labels).tolist() if pairs else [[0] * len(labels) for _ in labels]
    )
    return stats


def agreement_heatmap_png(stats: AgreementStats) -> bytes:
    """The annotator-vs-annotator confusion matrix as a PNG heatmap."""
    # Imported here for start-up time: matplotlib is slow to import and only this chart needs it.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matrix = np.array(stats.confusion)
    fig = Figure(figsize=(8, 7), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    names = [stats.names[code] for code in stats.labels]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("second label")
    ax.set_ylabel("first label")
    kappa = "n/a" if stats.kappa is None else f"{stats.kappa:.3f}"
    ax.set_title(f"Annotator vs annotator ({stats.n_images} images, Cohen's κ = {kappa})")
    threshold = matrix.max() / 2 if matrix.size and matrix.max() else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(
                j, i, str(value), ha="center", va="center", fontsize=7, color="white" if value > threshold else "black"
            )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
