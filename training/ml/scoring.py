"""Scoring many image files with an `Ensemble`: DataLoader workers feed both members, then calibrated voting.

`Ensemble.predict_proba` decodes in the calling process, which caps a GPU at one core's JPEG decoding; this
path overlaps decoding (in worker processes) with the forward passes and returns the same probabilities.

Two decoders: "pil" decodes and resizes in the workers exactly as training does. "device" has the workers
only read the files and decodes JPEGs in batches on the ensemble's device (nvJPEG on a GPU), then resizes there
with an antialiased bilinear filter (within one grey level of the training decoding), which takes the decoding off the
CPU for hosts with few cores per GPU. Other formats, and JPEGs the device decoder refuses, go through PIL.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from training.ml.calibration import apply_temperature, probabilities_to_logits
from training.ml.data import create_loader, default_num_workers
from training.ml.ensemble import Ensemble, soft_vote
from training.ml.loop import autocast
from training.ml.transforms import CellTransform, Size, build_transform, center_crop, load_image

_logger = logging.getLogger(__name__)

DECODERS = ("pil", "device")
_JPEG_MAGIC = b"\xff\xd8\xff"


class EncodedFiles(Dataset):
    """(path, data) per file: a JPEG's bytes as a 1-D uint8 tensor (decoded later, batched, on the device); any
    other file, and a JPEG that training decodes at a reduced scale, decoded and resized here by `transform`, as a
    (3, H, W) uint8 tensor."""

    def __init__(self, paths: Sequence[str | Path], transform: CellTransform) -> None:
        self.paths = [str(path) for path in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> tuple[str, torch.Tensor]:
        path = self.paths[position]
        data = Path(path).read_bytes()
        if data[:3] == _JPEG_MAGIC and not self._reduced_by_libjpeg(data):
            return path, torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return path, self.transform(load_image(path, self.transform.size, crop=self.transform.crop))

    def _reduced_by_libjpeg(self, data: bytes) -> bool:
        # Training decodes a JPEG at least twice the model size at a reduced DCT scale (`load_image`), which a
        # full decode plus resize only approximates; such files are decoded here, as in training. Reading the
        # header and choosing the scale costs microseconds; the pool's usual case (256 px from 360 px) is not one.
        try:
            with Image.open(io.BytesIO(data)) as image:
                full = image.size
                image.draft("RGB", _draft_size(self.transform))
                return image.size != full
        except OSError:
            return True  # unreadable: let `load_image` fail with the file's name


def _as_list(batch: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    return batch  # module level so worker processes can pickle it; the tensors differ in length


def _draft_size(transform: CellTransform) -> tuple[int, int]:
    # What `load_image` asks libjpeg for: the kept centre must still be at least the model's size.
    return math.ceil(transform.size[1] / transform.crop), math.ceil(transform.size[0] / transform.crop)


def _jpeg_pil(path: str, data: torch.Tensor, transform: CellTransform) -> torch.Tensor:
    try:
        image = Image.open(io.BytesIO(data.numpy().tobytes()))
        image.draft("RGB", _draft_size(transform))
        return transform(image.convert("RGB"))
    except OSError as exc:
        raise OSError(f"{path}: not a readable JPEG ({exc.__class__.__name__})") from exc


def decode_batch(
    items: Sequence[tuple[str, torch.Tensor]], size: Size, device: torch.device, transform: CellTransform
) -> torch.Tensor:
    """(N, 3, H, W) uint8 on `device` from `EncodedFiles` items: JPEG bytes decoded on the device in one call."""
    from torchcodec.decoders import decode_jpeg  # loads its codec libraries; only this decoder needs them

    images: list[torch.Tensor | None] = [None] * len(items)
    jpegs = [i for i, (_, data) in enumerate(items) if data.dim() == 1]
    for i, (_, data) in enumerate(items):
        if data.dim() != 1:
            images[i] = data.to(device, non_blocking=True)
    if jpegs:
        try:
            # Whole images from the device decoder: crop them as the transform crops before its resize.
            decoded = [
                center_crop(image, transform.crop)
                for image in decode_jpeg([items[i][1] for i in jpegs], mode="RGB", device=device)
            ]
        except RuntimeError as exc:  # e.g. a JPEG variant the device decoder does not support
            _logger.warning("device JPEG decoding failed (%s); decoding this batch with PIL", exc)
            decoded = [_jpeg_pil(*items[i], transform).to(device) for i in jpegs]
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    # Resize by shape group: a pool from one analyzer is mostly one size, so usually one call per batch.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    out = torch.empty((len(items), 3, *size), dtype=torch.uint8, device=device)
    for shape, members in groups.items():
        stack = torch.stack([images[i] for i in members])
        if shape[1:] != tuple(size):
            stack = F.interpolate(stack.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            stack = stack.round_().clamp_(0, 255).to(torch.uint8)
        out[members] = stack
    return out


def input_batches(
    paths: Sequence[str | Path],
    *,
    size: Size,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    decoder: str = "pil",
    crop: float = 1.0,
) -> Iterator[torch.Tensor]:
    """(n, 3, H, W) uint8 batches of image files on `device`, in file order, decoded by `decoder`: what the
    networks of `ensemble_score_stream` consume (the benchmark times it alone as "decode only")."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    transform = build_transform(size, train=False, crop=crop)
    if decoder == "pil":
        loader = create_loader(
            [(str(path), 0) for path in paths],
            transform=transform,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        return (images.to(device, non_blocking=True) for images, _ in loader)
    files = DataLoader(
        EncodedFiles(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    return (decode_batch(items, size, device, transform) for items in files)


def ensemble_score_stream(
    ensemble: Ensemble,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    channels_last: bool | None = None,
    calibrated: bool = True,
    decoder: str = "pil",
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Ensemble probabilities of image files, one (n, C) array per batch in file order, as
    `Ensemble.predict_proba` computes them; one DataLoader spans all of `paths`, so a caller that writes results
    as they come (pool scoring) never restarts the decoding workers.

    Args:
        ensemble: the loaded ensemble (its device, image size, weights and temperature are used).
        paths: image files, decoded like the training images.
        batch_size: images per forward pass.
        num_workers: decoding (or, with decoder "device", reading) processes (None: `default_num_workers`).
        channels_last: channels-last inputs and weights (None: on CUDA only, where convolutions gain from it).
        calibrated: apply the ensemble temperature.
        decoder: "pil" (in the workers, as in training) or "device" (batched on the ensemble's device).
        on_batch: called after each batch is queued with (batch index, images so far); benchmarks time with it.
    """
    device = ensemble.device
    workers = default_num_workers(device.type) if num_workers is None else num_workers
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    if channels_last:
        for model in ensemble.models:
            model.to(memory_format=torch.channels_last)
    batches = input_batches(
        paths,
        size=ensemble.image_size,
        device=device,
        batch_size=batch_size,
        num_workers=workers,
        decoder=decoder,
        crop=ensemble.center_crop,
    )

    def finish(member_outputs: list[torch.Tensor]) -> np.ndarray:
        vote = soft_vote([p.cpu().numpy().astype(np.float64) for p in member_outputs], ensemble.weights)
        return apply_temperature(probabilities_to_logits(vote), ensemble.temperature) if calibrated else vote

    # A batch's results are copied to the host only after the next batch is queued, so the device never idles
    # while the host waits for one batch to finish.
    pending: list[torch.Tensor] | None = None
    done = 0
    with torch.no_grad():
        for index, images in enumerate(batches):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            outputs = []
            for model in ensemble.models:
                with autocast(device, ensemble.mixed_precision):
                    outputs.append(torch.softmax(model(images).float(), dim=1))
            done += len(images)
            if on_batch is not None:
                on_batch(index, done)
            if pending is not None:
                yield finish(pending)
            pending = outputs
    if pending is not None:
        yield finish(pending)


def ensemble_score_paths(ensemble: Ensemble, paths: Sequence[str | Path], **options) -> np.ndarray:
    """(N, C) ensemble probabilities of image files: `ensemble_score_stream`'s batches (same options) stacked."""
    chunks = list(ensemble_score_stream(ensemble, paths, **options))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(ensemble.classes)))
