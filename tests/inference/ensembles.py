"""A real, tiny, random-init ensemble on disk behind an ACTIVE model version: loads and scores like a trained one,
in milliseconds (timm's test networks), so explanation and API tests need no training run."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from django.conf import settings

from annotation.models import CellClass
from tests.factories.training import ModelVersionFactory
from training.ml.checkpoint import save_checkpoint
from training.ml.ensemble import MemberSpec, write_ensemble_file
from training.ml.models import create_classifier
from training.models import ModelVersion

MEMBERS = (("test_efficientnet", 0.4), ("test_efficientnet_gn", 0.6))
# 64 px: the last conv block is 2x2, so a Grad-CAM map has structure (at 32 px it would be a single cell).
IMAGE_SIZE = 64
_dirs = itertools.count(1)


def ensemble_write(out_dir: Path, *, classes: list[str], seed: int = 0, center_crop: float = 1.0) -> Path:
    """Random-init members saved as safetensors plus ensemble.json, the layout `train_ensemble` writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    members = []
    for name, weight in MEMBERS:
        model = create_classifier(name, len(classes), pretrained="none")
        save_checkpoint(out_dir / f"{name}.safetensors", model, classes=classes)
        members.append(MemberSpec(name=name, checkpoint=f"{name}.safetensors", weight=weight, temperature=1.0))
    write_ensemble_file(
        out_dir,
        classes=classes,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        members=members,
        temperature=1.5,
        center_crop=center_crop,
    )
    return out_dir


def version_factory(make_version):
    """The maker behind each test module's `version_with_ensemble` fixture: make(status) -> a ModelVersion whose
    out_dir holds a real ensemble over the taxonomy (ACTIVE unless told otherwise)."""

    def make(status: str = ModelVersion.Status.ACTIVE, center_crop: float = 1.0) -> ModelVersion:
        version = make_version(status)
        out_dir = f"models/explain-test-{version.pk}-{next(_dirs)}"
        classes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
        ensemble_write(Path(settings.MEDIA_ROOT) / out_dir, classes=classes, center_crop=center_crop)
        version.out_dir = out_dir
        version.save(update_fields=["out_dir"])
        return version

    return make


def active_version_write(*, created_by, name: str, temperature: float = 1.0) -> ModelVersion:
    """An ACTIVE ModelVersion over a frozen dataset version (needs final labels) with a real ensemble on disk,
    for browser tests that reach the model through the pages."""
    version = ModelVersionFactory(
        run__requested_by=created_by, temperature=temperature, status=ModelVersion.Status.ACTIVE
    )
    version.out_dir = f"models/{name}-{version.run.pk}"
    classes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
    ensemble_write(Path(settings.MEDIA_ROOT) / version.out_dir, classes=classes)
    version.save(update_fields=["out_dir"])
    return version
