"""The embedding index read as a neighbourhood: the most similar cells with a final label beside a cell (a reference
atlas from the lab's own data, for adjudicators, researchers and admins, never for someone who may still label the
cell) and the near-duplicates an embedding pass brought (written into annotation, which cannot measure them).

Plain cosine similarity of the index vectors (training.ml.neighbours), exact, over the whole index: less the index
mean it separated copies from distinct cells no better and found a copy's original first less often
(bench/README.md). The similar-cell
look-up keeps the last index it loaded in the process while its shards are unchanged: a page or API call then pays
one pass over the matrix, not a read of every shard.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from annotation.models import CellImage, LabelStatus
from annotation.selectors.blinding import image_require_visible, images_hidden_from
from annotation.services.near_duplicates import near_duplicates_record
from core.errors import PermissionRefused
from core.roles import user_has_role
from inference.explain.policy import EXPLAIN_ROLES
from inference.models import Embedding, EmbeddingJob, EmbeddingSpace
from inference.services.index import index_load, index_spec_for
from training.ml.neighbours import cosine_similarities, cosine_top_k, unit_rows
from training.selectors import model_version_active

_logger = logging.getLogger(__name__)

SIMILAR_CELLS = 6
# Neighbours of each new cell checked against the threshold: more than one, so a cell copied twice reports both.
NEAR_DUPLICATE_NEIGHBOURS = 5
# Candidates checked for a final label at first, and the factor they grow by while too few of them have one.
_FIRST_CANDIDATES = 64
_GROWTH = 8

_cache_lock = threading.Lock()
_cache: dict[str, tuple[weakref.ref, np.ndarray]] = {}


@dataclass(frozen=True)
class SimilarCell:
    image_id: int
    class_code: str
    class_name: str
    similarity: float


@dataclass(frozen=True)
class SimilarCells:
    """`state`: "ready" (cells, possibly none with a final label yet), "no_index" (no index holds this cell yet),
    "unavailable" (the index's files cannot be read)."""

    state: str
    message: str
    cells: list[SimilarCell]
    space_key: str = ""


def _spaces() -> list[EmbeddingSpace]:
    """The index serving the active version, then the bundled backbone's (which every import grows)."""
    keys = [index_spec_for(model_version_active()).key, index_spec_for(None).key]
    spaces = {space.key: space for space in EmbeddingSpace.objects.filter(key__in=keys)}
    return [spaces[key] for key in dict.fromkeys(keys) if key in spaces]


def _index_cached(space: EmbeddingSpace) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float16 rows scaled to length 1) of `space`, scaled again only when `index_load` hands out another
    matrix (its cache decides when the shards changed: added, removed or rewritten)."""
    ids, matrix = index_load(space=space)
    with _cache_lock:
        cached = _cache.get(space.key)
        if cached is not None and cached[0]() is matrix:
            return ids, cached[1]
        unit = np.empty_like(matrix)
        for start in range(0, len(matrix), 65_536):
            unit[start : start + 65_536] = unit_rows(matrix[start : start + 65_536])
        _cache.clear()  # one index in memory per process
        # A weak reference: the scaled copy must not keep a matrix alive that index_load's cache has dropped.
        _cache[space.key] = (weakref.ref(matrix), unit)
        return ids, unit


def similar_cells_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def image_similar_cells(*, image: CellImage, viewer, k: int = SIMILAR_CELLS) -> SimilarCells:
    """The `k` cells with a final class most cosine-similar to `image` in the index, most similar first, leaving out
    cells hidden from `viewer` (annotation.selectors.blinding). Refused (PermissionRefused, CellHidden) to anyone who
    may not see the model's opinion on `image`: the neighbours' labels say what the cell probably is."""
    if not user_has_role(viewer, *EXPLAIN_ROLES):
        raise PermissionRefused("Similar cells are for adjudicators, researchers and admins.")
    image_require_visible(user=viewer, image=image)
    for space in _spaces():
        if not Embedding.objects.filter(space=space, image=image).exists():
            continue
        try:
            ids, unit = _index_cached(space)
        except (OSError, ValueError) as exc:  # a shard missing or unreadable in storage: the page still renders
            _logger.exception("index %s could not be read for similar cells", space.key)
            return SimilarCells(state="unavailable", message=f"The embedding index could not be read: {exc}", cells=[])
        row = int(np.searchsorted(ids, image.pk))
        if row >= len(ids) or ids[row] != image.pk:
            continue  # embedded after the cached load's shards were counted
        cells = _final_neighbours(ids=ids, unit=unit, row=row, viewer=viewer, k=k)
        message = "" if cells else "No cell with a final label in the index yet."
        return SimilarCells(state="ready", message=message, cells=cells, space_key=space.key)
    return SimilarCells(
        state="no_index", message="No similar cells yet: the embedding index is being built for this cell.", cells=[]
    )


def _final_neighbours(*, ids: np.ndarray, unit: np.ndarray, row: int, viewer, k: int) -> list[SimilarCell]:
    sims = cosine_similarities(unit[row], unit, unit=True)
    sims[row] = -np.inf
    order = np.argsort(-sims, kind="stable")  # one sort; candidates are then taken in growing slices
    found: list[SimilarCell] = []
    start, width = 0, _FIRST_CANDIDATES
    while len(found) < k and start < len(order):
        candidates = [int(ids[i]) for i in order[start : start + width] if np.isfinite(sims[i])]
        similarity = {int(ids[i]): float(sims[i]) for i in order[start : start + width]}
        hidden = set(images_hidden_from(user=viewer).filter(id__in=candidates).values_list("id", flat=True))
        final = (
            CellImage.objects.filter(id__in=candidates, label_status=LabelStatus.FINAL, final_label__isnull=False)
            .exclude(id__in=hidden)
            .values_list("id", "final_label__code", "final_label__name")
        )
        cells = [SimilarCell(image_id=i, class_code=c, class_name=n, similarity=similarity[i]) for i, c, n in final]
        found += sorted(cells, key=lambda cell: (-cell.similarity, cell.image_id))
        start, width = start + width, width * _GROWTH
    return found[:k]


def near_duplicates_detect(*, job: EmbeddingJob) -> int:
    """After an embedding pass: record each cell it embedded whose vector has cosine similarity at least
    HEMALOOP_NEAR_DUPLICATE_SIMILARITY with another cell of the index (earlier or of the same pass) as a near-duplicate
    pair (annotation.models.NearDuplicate). Only in the space the settings configure (the bundled backbone at
    HEMALOOP_INDEX_IMAGE_SIZE and HEMALOOP_INDEX_CROP): the threshold was measured for it (bench/README.md); a
    fine-tuned member pulls distinct cells of a class together, and a whole-image space (an index built before the
    crop, still serving an older head) has distinct cells closer than the cropped threshold. Returns the new pairs."""
    space = job.space
    if space.key != index_spec_for(None).key:
        _logger.info("embedding job %s: no near-duplicate check in %s (not the configured index)", job.pk, space.key)
        return 0
    new_ids = np.array(sorted(Embedding.objects.filter(shard__job=job).values_list("image_id", flat=True)))
    if len(new_ids) == 0:
        return 0
    ids, matrix = index_load(space=space)
    rows = np.searchsorted(ids, new_ids)
    rows = rows[(rows < len(ids)) & (ids[np.minimum(rows, len(ids) - 1)] == new_ids)]
    neighbours, sims = cosine_top_k(matrix[rows], matrix, k=NEAR_DUPLICATE_NEIGHBOURS, skip=rows)
    threshold = settings.HEMALOOP_NEAR_DUPLICATE_SIMILARITY
    pairs = [
        (int(ids[row]), int(ids[other]), float(sim))
        for row, others, similarities in zip(rows, neighbours, sims, strict=True)
        for other, sim in zip(others, similarities, strict=True)
        if other >= 0 and sim >= threshold
    ]
    recorded = near_duplicates_record(pairs=pairs, space_key=space.key)
    if recorded:
        _logger.info("embedding job %s: %s near-duplicate pairs among %s new cells", job.pk, recorded, len(rows))
    return recorded
