"""The inference API's service: validate uploaded images, score them with the ACTIVE ensemble, optionally with
Grad-CAM overlays. Nothing is stored: uploads live only for the request."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image

from annotation.selectors.blinding import images_hidden_from
from annotation.services.validation import ACCEPTED_FORMATS, FileRejected, ImportLimits, image_validate, megabytes
from inference.ensembles import ensemble_get, model_version_name
from inference.errors import NoActiveModel, PredictRejected
from inference.explain.heatmaps import heatmap_render
from training.ml.uncertainty import prediction_stats
from training.selectors import model_version_active


@dataclass(frozen=True)
class PredictLimits:
    max_files: int
    max_file_bytes: int
    max_pixels: int

    @classmethod
    def from_settings(cls) -> PredictLimits:
        # The per-file limits default to the import's (config/settings/base.py).
        return cls(
            max_files=settings.HEMALOOP_INFERENCE_MAX_FILES,
            max_file_bytes=settings.HEMALOOP_INFERENCE_MAX_FILE_BYTES,
            max_pixels=settings.HEMALOOP_INFERENCE_MAX_PIXELS,
        )


@dataclass(frozen=True)
class ImagePrediction:
    file_name: str
    probabilities: dict[str, float]
    predicted_class: str
    confidence: float
    margin: float
    entropy: float
    heatmap_png: bytes | None


@dataclass(frozen=True)
class PredictResult:
    model_version_id: int
    model_version_name: str
    results: list[ImagePrediction]


def _rgb(image: Image.Image) -> Image.Image:
    # 16-bit greyscale is scaled to 8 bits, not clipped (as the import's thumbnails do).
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def _decode(*, upload: UploadedFile, limits: PredictLimits) -> tuple[Image.Image, str]:
    """The upload as an RGB image with the SHA-256 of its bytes, or PredictRejected naming the file and what is
    wrong with it."""
    name = upload.name or "(unnamed)"
    if upload.size is not None and upload.size > limits.max_file_bytes:
        raise PredictRejected(
            f"{name}: file is {megabytes(upload.size)}, larger than the limit of {megabytes(limits.max_file_bytes)}",
            status=413,
        )
    data = upload.read()
    checks = dataclasses.replace(
        ImportLimits.from_settings(), max_file_bytes=limits.max_file_bytes, max_pixels=limits.max_pixels
    )
    try:
        # The import's checks: decoded in full, real format, pixel limit, decompression bombs.
        image_validate(data=data, limits=checks)
    except FileRejected as exc:
        raise PredictRejected(f"{name}: {exc}") from None
    with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        image.load()
        return _rgb(image), hashlib.sha256(data).hexdigest()


def _refuse_hidden_cells(*, files: Sequence[UploadedFile], digests: list[str], caller) -> None:
    """A stored cell is kept by the SHA-256 of its bytes: the caller's own copy of a cell hidden from them (one they
    may still label) gets no answer from the model, refused like any other file that cannot be scored."""
    hidden = set(images_hidden_from(user=caller).filter(sha256__in=digests).values_list("sha256", flat=True))
    for upload, digest in zip(files, digests, strict=True):
        if digest in hidden:
            name = upload.name or "(unnamed)"
            raise PredictRejected(f"{name}: this is a cell you may still label; the model does not score it for you")


def images_predict(
    *, files: Sequence[UploadedFile], caller, heatmap: bool = False, limits: PredictLimits | None = None
) -> PredictResult:
    """Score uploaded images with the active ensemble's calibrated probabilities.

    Every file is checked before any is scored, so a bad one rejects the request with a message naming it.
    Raises PredictRejected (400/413) and NoActiveModel; ModelUnavailable when the version cannot be loaded.

    Args:
        files: the uploads, in the order the results come back.
        caller: who asks; a file that is one of the cells hidden from them is refused (annotation's blinding rule).
        heatmap: add a Grad-CAM overlay PNG (for the predicted class) to each result.
        limits: None reads HEMALOOP_INFERENCE_MAX_FILES, _MAX_FILE_BYTES and _MAX_PIXELS.
    """
    limits = limits or PredictLimits.from_settings()
    if not files:
        raise PredictRejected("Send at least one image in the field 'images'.")
    if len(files) > limits.max_files:
        raise PredictRejected(f"{len(files)} images sent; at most {limits.max_files} per request.")
    version = model_version_active()
    if version is None:
        raise NoActiveModel()
    images, digests = zip(*(_decode(upload=upload, limits=limits) for upload in files), strict=True)
    _refuse_hidden_cells(files=files, digests=list(digests), caller=caller)

    ensemble = ensemble_get(model_version=version)
    classes = ensemble.classes
    probabilities = ensemble.predict_proba(list(images), batch_size=limits.max_files)
    top, confidence, margin, entropy = prediction_stats(probabilities)
    results = [
        ImagePrediction(
            file_name=upload.name or "",
            probabilities=dict(zip(classes, (float(p) for p in row), strict=True)),
            predicted_class=classes[int(top[i])],
            confidence=float(confidence[i]),
            margin=float(margin[i]),
            entropy=float(entropy[i]),
            heatmap_png=heatmap_render(ensemble=ensemble, image=image, class_index=int(top[i])) if heatmap else None,
        )
        for i, (upload, image, row) in enumerate(zip(files, images, probabilities, strict=True))
    ]
    return PredictResult(model_version_id=version.pk, model_version_name=model_version_name(version), results=results)
