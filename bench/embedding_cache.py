"""Pooled bundled-backbone embeddings of image files, cached by content hash (for `active_learning.py --learner head`).

One `<backbone>_<size>px.npz` per backbone and image size in the cache folder: the files' SHA-256 and their float16
vectors. A file seen before (under any name) is not embedded again, so repeated benchmark runs pay the embedding once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

_logger = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_files(
    paths: list[str],
    *,
    cache_dir: Path,
    backbone: str,
    image_size: int,
    crop: float = 1.0,
    num_workers: int = 1,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, list[str]]:
    """(N, D) float32 pooled features of `paths` (from the cache where the content was seen) and their SHA-256."""
    from training.ml.data import create_loader
    from training.ml.models import create_backbone
    from training.ml.transforms import build_transform

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Whole-image caches keep the names they had before the crop existed.
    cache_path = cache_dir / (
        f"{backbone}_{image_size}px.npz" if crop >= 1 else f"{backbone}_{image_size}px_crop{crop:g}.npz"
    )
    known: dict[str, np.ndarray] = {}
    if cache_path.exists():
        with np.load(cache_path) as stored:
            known = dict(zip(stored["sha256"].tolist(), stored["vectors"], strict=True))
    hashes = [file_sha256(p) for p in paths]
    missing = sorted({h: p for h, p in zip(hashes, paths, strict=True) if h not in known}.items())
    if missing:
        log(
            f"embedding {len(missing)} of {len(paths)} images with bundled {backbone} at {image_size} px, crop {crop:g}"
        )
        net = create_backbone(backbone, pretrained="bundled")  # normalises uint8 batches itself
        loader = create_loader(
            [(p, 0) for _, p in missing],
            transform=build_transform((image_size, image_size), train=False, crop=crop),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
        )
        vectors, done = [], 0
        with torch.inference_mode():
            for batch, _ in loader:
                vectors.append(net(batch).numpy().astype(np.float16))
                done += len(batch)
                if done % (batch_size * 16) < batch_size:
                    log(f"  embedded {done}/{len(missing)}")
        known.update(zip([h for h, _ in missing], np.concatenate(vectors), strict=True))
        keys = sorted(known)
        temporary = cache_path.with_suffix(".tmp.npz")
        np.savez(temporary, sha256=np.array(keys), vectors=np.stack([known[k] for k in keys]))
        temporary.replace(cache_path)  # a run killed mid-write never leaves a torn cache
    return np.stack([known[h] for h in hashes]).astype(np.float32), hashes
