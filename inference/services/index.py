"""The embedding index: one float16 pooled feature vector per image for the active version's backbone (the bundled
ImageNet one before any fine-tuning), written by a batched EmbeddingJob on the inference queue and grown with each
import; loaded whole for a queue refresh (inference.services.heads).

Storage: shards through Django's storage API (default_storage: a local folder or S3-compatible storage alike), each
with its image ids inside, and one Embedding row per image saying where it is (which finds the images still to
embed). Loading reads the shards only: 1M x 1280 float16 is 2.6 GB in about 245 files (bench/README.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from annotation.models import CellImage
from core.jobs import UNFINISHED, JobStatus, job_claim, job_finish, job_heartbeat, job_is_stale
from core.storage import storage_local_paths
from inference.ensembles import backbone_get, version_ensemble_spec
from inference.models import Embedding, EmbeddingJob, EmbeddingShard, EmbeddingSpace
from inference.services.scoring import image_id_chunks
from training.ml.embedding import BackboneSpec, IndexCache, embed_paths, index_stack, shard_bytes, shard_read
from training.models import ModelVersion

_logger = logging.getLogger(__name__)
# This process's last loaded index (one space at most), re-read only when its shard rows change.
_loaded = IndexCache()


def index_spec_for(version: ModelVersion | None) -> BackboneSpec:
    """The backbone whose index serves `version`: a head's own backbone; a fully trained ensemble's member with the
    largest vote weight (fine-tuned features); with no version, the bundled ImageNet backbone of the settings.

    One member of an ensemble, not each: while an ensemble is active the queue is ordered by the ensemble itself (the
    whole-pool scoring job after its activation, every member voting), and the heads trained on its index stay
    candidates until an admin activates one (training.services.versions.model_version_activate_refreshed_head).
    Every member's features side by side would double the one-time embedding pass, the index (1280 + 1408 dims for
    the paper's pair: 5.4 GB at 1M images instead of 2.6) and the refresh, which grows with the vector length and
    already takes 42-53 s at 1M images on 2 cores against a 60 s goal (bench/README.md), for a head that only ranks.
    """
    if version is None:
        size = settings.HEMALOOP_INDEX_IMAGE_SIZE
        return BackboneSpec(
            name=settings.HEMALOOP_INDEX_BACKBONE, image_size=(size, size), crop=settings.HEMALOOP_INDEX_CROP
        )
    if version.is_head:
        return BackboneSpec.from_dict(version.config["backbone"])
    spec = version_ensemble_spec(model_version=version)
    weights = [member["weight"] for member in spec["members"]]
    member = int(np.argmax(weights))
    return BackboneSpec(
        name=spec["members"][member]["name"],
        image_size=tuple(spec["image_size"]),
        source="version",
        version_id=version.pk,
        member=member,
        crop=float(spec.get("center_crop", 1.0)),
    )


def index_space_get(*, spec: BackboneSpec) -> EmbeddingSpace:
    space, _ = EmbeddingSpace.objects.get_or_create(key=spec.key, defaults={"backbone": spec.as_dict()})
    return space


def index_pool(*, space: EmbeddingSpace) -> QuerySet[CellImage]:
    """The images not yet in the space's index."""
    return CellImage.objects.exclude(Exists(Embedding.objects.filter(space=space, image=OuterRef("pk"))))


def embedding_job_unfinished(*, space: EmbeddingSpace) -> EmbeddingJob | None:
    jobs = EmbeddingJob.objects.filter(space=space, status__in=UNFINISHED).order_by("id")
    return next((job for job in jobs if not job_is_stale(job)), None)


def _shard_write(*, space: EmbeddingSpace, job: EmbeddingJob, rows: list[tuple[int, str]], vectors: np.ndarray) -> int:
    """One shard file and its Embedding rows, together: a crash between leaves the images to embed again."""
    ids = [image_id for image_id, _ in rows]
    content = shard_bytes(ids, vectors)
    name = default_storage.save(f"index/{space.pk}/job{job.pk}-{ids[0]}-{ids[-1]}.npz", ContentFile(content))
    with transaction.atomic():
        shard = EmbeddingShard.objects.create(
            space=space, job=job, file=name, count=len(ids), sha256=hashlib.sha256(content).hexdigest()
        )
        Embedding.objects.bulk_create(
            [Embedding(space=space, image_id=image_id, shard=shard, row=row) for row, image_id in enumerate(ids)],
            batch_size=2000,
            ignore_conflicts=True,  # an image embedded by a pass that overlapped this one keeps either vector
        )
        if space.dim != vectors.shape[1]:
            space.dim = int(vectors.shape[1])
            space.save(update_fields=["dim"])
    return len(ids)


def embedding_job_run(*, job_id: int, batch_size: int = 64) -> EmbeddingJob | None:
    """Claim a queued embedding job and embed the images not yet in its space, one shard per
    HEMALOOP_INDEX_SHARD_SIZE images (the job's heartbeat); None when the job was not queued. A failure fails the
    job with its message and is raised again."""
    job = job_claim(model=EmbeddingJob, job_id=job_id)
    if job is None:
        return None
    space = job.space
    spec = BackboneSpec.from_dict(space.backbone)
    images = index_pool(space=space)
    total, done = images.count(), 0
    try:
        job_heartbeat(job=job, done=0, total=total)
        backbone = backbone_get(spec=spec)
        for rows in image_id_chunks(images=images, chunk=settings.HEMALOOP_INDEX_SHARD_SIZE):
            # As pool scoring does: local files (the stored ones, or this host's copies of what is in a bucket).
            paths = [str(path) for path in storage_local_paths(names=[file for _, file in rows])]
            vectors = np.concatenate(
                list(embed_paths(backbone, paths, image_size=spec.image_size, batch_size=batch_size, crop=spec.crop))
            )
            done += _shard_write(space=space, job=job, rows=rows, vectors=vectors)
            total = max(total, done)
            if not job_heartbeat(job=job, done=done, total=total):
                _logger.warning("embedding job %s is no longer running; stopping", job.pk)
                job.refresh_from_db()
                return job
    except Exception as exc:
        _logger.exception("embedding job %s (space %s) failed", job.pk, space.key)
        job_finish(job=job, status=JobStatus.FAILED, error=str(exc))
        raise
    return job_finish(job=job, status=JobStatus.SUCCEEDED, done=done, total=total)


def index_load(*, space: EmbeddingSpace) -> tuple[np.ndarray, np.ndarray]:
    """(image ids ascending, (N, D) float16 matrix) of the whole index, read-only: read shard by shard from default
    storage into one preallocated matrix (training.ml.embedding.index_stack), or this process's copy from the last
    load while no shard row of the space was added, removed or changed (id, file, count, SHA-256)."""
    shards = tuple(
        EmbeddingShard.objects.filter(space=space).order_by("id").values_list("id", "file", "count", "sha256")
    )

    def read() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for _, name, _, _ in shards:
            with default_storage.open(name, "rb") as handle:
                yield shard_read(handle)

    def load() -> tuple[np.ndarray, np.ndarray]:
        return index_stack(read(), dim=space.dim, count=sum(count for _, _, count, _ in shards))

    return _loaded.get((space.pk, space.dim, shards), load)


def index_cache_clear() -> None:
    """Forget the loaded index (tests; a process that needs the memory back)."""
    _loaded.clear()


def index_size(*, space: EmbeddingSpace) -> int:
    return Embedding.objects.filter(space=space).count()
