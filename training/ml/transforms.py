"""Image decoding and augmentation: PIL in, uint8 CHW tensors out (models normalise on their device)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from training.ml.config import NATIVE_SIZE

_logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (height, width)

# Images read to find the "native" size: enough to find the analyzer's size among a few odd crops.
_NATIVE_SAMPLE = 64


def load_image(path: str | Path, size: Size | None = None, *, crop: float = 1.0) -> Image.Image:
    """Open `path` as RGB. With `size`, a JPEG is decoded at the smallest DCT scale still >= size.

    Args:
        path: image file.
        size: the (height, width) the caller will resize to; lets libjpeg skip detail that the resize would
            throw away, which is most of the decoding cost at small training sizes.
        crop: the centre fraction the caller will keep (see `center_crop`): the decoded image must be
            `size / crop` for the kept part to still be at least `size`.
    """
    image = Image.open(path)
    if size is not None and image.format == "JPEG":
        image.draft("RGB", (math.ceil(size[1] / crop), math.ceil(size[0] / crop)))
    return image.convert("RGB")


def crop_box(height: int, width: int, crop: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the centred `crop` fraction of each side of a height x width image."""
    if crop >= 1.0:
        return 0, 0, height, width
    keep_h, keep_w = max(1, round(height * crop)), max(1, round(width * crop))
    top, left = (height - keep_h) // 2, (width - keep_w) // 2
    return top, left, top + keep_h, left + keep_w


def center_crop(image: torch.Tensor, crop: float) -> torch.Tensor:
    """The centred `crop` fraction of each side of (..., H, W) images (a view). Single white-cell images from the
    analyzers have the cell in the middle and red cells around it: keeping the middle spends the model's pixels on
    the cell (nucleus shape and chromatin tell the maturation stages apart)."""
    top, left, bottom, right = crop_box(image.shape[-2], image.shape[-1], crop)
    return image[..., top:bottom, left:right]


def resolve_image_size(image_size: int | str, paths: Sequence[str | Path]) -> Size:
    """The (height, width) the models see: a square `image_size`, or the most common size among `paths`.

    Args:
        image_size: pixels per side, or "native".
        paths: training images, read (headers only) when `image_size` is "native".
    """
    if image_size != NATIVE_SIZE:
        return int(image_size), int(image_size)
    if not paths:
        raise ValueError("image_size='native' needs at least one training image to measure")
    step = max(1, len(paths) // _NATIVE_SAMPLE)
    sizes: Counter[Size] = Counter()
    for path in list(paths)[::step][:_NATIVE_SAMPLE]:
        with Image.open(path) as image:  # opening reads the header only
            sizes[(image.height, image.width)] += 1
    size, count = sizes.most_common(1)[0]
    if len(sizes) > 1:
        _logger.info("native size %sx%s (%d of %d sampled images); others are resized", *size, count, sizes.total())
    return size


def resize_uint8(image: torch.Tensor, size: Size) -> torch.Tensor:
    """A (3, H, W) uint8 image resized to `size` with an antialiased bilinear filter (PIL's BILINEAR resize to
    within two grey levels), in torch's vectorised uint8 kernel: about twice as fast as PIL's per image, and the
    resize was most of the CPU time of decoding a 360 px cell to 256 px (bench/README.md)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class CellTransform:
    """Resize to a fixed size, augment (training only), and return a uint8 CHW tensor.

    A module-level class rather than a lambda so DataLoader workers can pickle it.
    """

    def __init__(
        self,
        size: Size,
        *,
        train: bool,
        rotation_degrees: float = 180.0,
        hflip: bool = True,
        vflip: bool = True,
        crop: float = 1.0,
    ) -> None:
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], not {crop}")
        self.size = size
        self.crop = crop
        self.train = train
        self.rotation_degrees = rotation_degrees
        self.hflip = hflip
        self.vflip = vflip

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        tensor = resize_uint8(center_crop(tensor, self.crop), self.size)
        if not self.train:
            return tensor
        augmented = self._augment(Image.fromarray(tensor.permute(1, 2, 0).numpy()))
        return torch.from_numpy(np.asarray(augmented, dtype=np.uint8).copy()).permute(2, 0, 1)

    def _augment(self, image: Image.Image) -> Image.Image:
        # torch's RNG, not numpy's: DataLoader seeds torch (and `random`) per worker, never numpy.
        if self.hflip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.vflip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if self.rotation_degrees > 0:
            angle = float((torch.rand(()) * 2 - 1) * self.rotation_degrees)
            # Fill the uncovered corners with the smear's background colour (the border median), not black:
            # black corners would be a feature that only augmented training images have.
            image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_border_colour(image))
        return image

    def __repr__(self) -> str:
        return (
            f"CellTransform(size={self.size}, crop={self.crop}, train={self.train}, "
            f"rotation_degrees={self.rotation_degrees}, "
            f"hflip={self.hflip}, vflip={self.vflip})"
        )


def _border_colour(image: Image.Image) -> tuple[int, ...]:
    array = np.asarray(image)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def build_transform(
    size: Size,
    *,
    train: bool,
    augment: bool = True,
    rotation_degrees: float = 180.0,
    hflip: bool = True,
    vflip: bool = True,
    crop: float = 1.0,
) -> CellTransform:
    """The transform for one split: augmentation only when `train` and `augment`.

    Args:
        size: (height, width) output size.
        train: whether this is the training split.
        augment: switch augmentation off entirely (ablations).
        rotation_degrees: rotations drawn uniformly from [-d, d]; 180 covers every orientation.
        hflip: random horizontal flips.
        vflip: random vertical flips.
        crop: keep the centred fraction of each side before resizing (1: the whole image).
    """
    augmenting = train and augment
    return CellTransform(
        size,
        crop=crop,
        train=augmenting,
        rotation_degrees=rotation_degrees if augmenting else 0.0,
        hflip=hflip and augmenting,
        vflip=vflip and augmenting,
    )
