"""Images decoded once into a uint8 tensor, and batches augmented on that tensor's device.

For runs that train many times on subsets of one pool (active-learning simulations): JPEG decoding then
happens once per process instead of once per epoch, and on a GPU the pool and the augmentation stay there.
`TensorBatches` is a drop-in for the DataLoaders that `training.ml.loop.fit` and `predict_logits` iterate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from training.ml.data import Item, create_loader
from training.ml.transforms import Size, build_transform

_logger = logging.getLogger(__name__)


def decode_items(
    items: Sequence[Item], size: Size, *, num_workers: int = 0, batch_size: int = 128, crop: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) uint8 images and (N,) int64 labels, decoded exactly as the evaluation DataLoader does.

    Args:
        items: (path, label) pairs.
        size: (height, width) to resize to.
        num_workers: decoding processes.
        batch_size: images per decoding batch.
        crop: the centred fraction of each side kept before resizing.
    """
    if not items:
        return torch.empty((0, 3, *size), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64)
    loader = create_loader(
        items,
        transform=build_transform(size, train=False, crop=crop),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    images, labels = [], []
    for batch, batch_labels in loader:
        images.append(batch)
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels).to(torch.int64)


def augment_batch(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    rotation_degrees: float = 180.0,
    hflip: bool = True,
    vflip: bool = True,
) -> torch.Tensor:
    """Random flips and a random rotation per image, on the images' device; returns floats in [0, 1].

    The rotation uses `affine_grid` in pixel-true coordinates (no shear on non-square images) and fills the
    uncovered corners by repeating the edge pixels, which are smear background, rather than with black (black
    corners would be a feature only augmented images have; `CellTransform` avoids them the same way).

    Args:
        images: (N, 3, H, W) uint8 or float in [0, 1].
        generator: a CPU generator; the few random numbers per batch are drawn there and copied over.
        rotation_degrees: angles uniform in [-d, d].
        hflip: random horizontal flips.
        vflip: random vertical flips.
    """
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    n, _, height, width = x.shape
    draws = torch.rand((3, n), generator=generator).to(x.device, non_blocking=True)
    if hflip:
        x = torch.where((draws[0] < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
    if vflip:
        x = torch.where((draws[1] < 0.5).view(-1, 1, 1, 1), x.flip(2), x)
    if rotation_degrees > 0:
        angle = (draws[2] * 2 - 1) * math.radians(rotation_degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        # affine_grid works in [-1, 1] per axis; the aspect factors keep the rotation rigid in pixels.
        theta = torch.stack(
            [
                torch.stack([cos, -sin * height / width, zero], dim=1),
                torch.stack([sin * width / height, cos, zero], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x


class TensorBatches:
    """Batches of (images, labels) from in-memory tensors, in the shape `fit`/`predict_logits` iterate.

    Training batches (`shuffle=True`) are reshuffled every pass, augmented on the images' device when
    `augment` is set, drop a ragged last batch (as `create_loader` does), and carry labels on that device.
    Evaluation batches keep order, are not augmented, and carry labels on the CPU (`predict_logits` gathers
    them with numpy). `min_batches` lengthens a training pass over a tiny labeled set by further reshuffled
    passes, so a round with 20 labeled images still gets a useful number of optimiser steps per "epoch".
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        augment: bool = False,
        rotation_degrees: float = 180.0,
        hflip: bool = True,
        vflip: bool = True,
        seed: int = 0,
        min_batches: int = 1,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if shuffle and len(images) < 2:
            raise ValueError("training needs at least two images (batch norm cannot train on one)")
        self.images = images
        self.labels = labels.to(images.device) if shuffle else labels.cpu()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment and shuffle
        self.augment_options = {"rotation_degrees": rotation_degrees, "hflip": hflip, "vflip": vflip}
        self.min_batches = max(1, min_batches) if shuffle else 1
        self.generator = torch.Generator().manual_seed(seed)

    def _batches_per_pass(self) -> int:
        n = len(self.images)
        if not self.shuffle:
            return math.ceil(n / self.batch_size)
        # A last training batch of one image breaks batch norm; with more images than one batch, drop it.
        return n // self.batch_size if n > self.batch_size else 1

    def __len__(self) -> int:
        per_pass = self._batches_per_pass()
        return per_pass * math.ceil(self.min_batches / per_pass)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            return
        per_pass = self._batches_per_pass()
        size = min(self.batch_size, n)
        for _ in range(len(self) // per_pass):
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
            for b in range(per_pass):
                pick = order[b * size : (b + 1) * size]
                batch = self.images[pick]
                if self.augment:
                    batch = augment_batch(batch, generator=self.generator, **self.augment_options)
                yield batch, self.labels[pick]
