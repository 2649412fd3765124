"""Ensemble Grad-CAM: maps at the image's size in [0, 1], the vote weights honoured, and the PNG overlay."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from training.ml.ensemble import Ensemble
from training.ml.gradcam import ensemble_cam, gradcam_png, member_cam, overlay_png
from training.ml.models import create_classifier
from training.ml.transforms import build_transform, crop_box

SIZE = 96  # the members see 96 px: a 3x3 last conv block, so maps have structure


def _ensemble(weights=(0.4, 0.6), center_crop=1.0) -> Ensemble:
    torch.manual_seed(0)
    members = [create_classifier(name, 4) for name in ("test_efficientnet", "test_efficientnet_gn")]
    return Ensemble(
        members,
        weights=weights,
        temperature=1.0,
        classes=["a", "b", "c", "d"],
        image_size=(SIZE, SIZE),
        device=torch.device("cpu"),
        center_crop=center_crop,
    )


@pytest.fixture
def cell() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (70, 120, 3), dtype=np.uint8))  # 120 wide, 70 high


def test_the_map_has_the_images_size_and_spans_zero_to_one(cell):
    cam = ensemble_cam(_ensemble(), cell, class_index=2)
    assert cam.shape == (70, 120)
    assert cam.min() >= 0.0
    assert cam.max() == pytest.approx(1.0, abs=0.05)
    assert cam.std() > 0.01  # not a flat map


def test_a_near_zero_weight_leaves_the_other_members_map(cell):
    ensemble = _ensemble(weights=(1.0, 1e-9))
    only_first = ensemble_cam(ensemble, cell, class_index=1)
    batch = build_transform((SIZE, SIZE), train=False)(cell).unsqueeze(0).float() / 255.0  # what the members see
    expected = member_cam(ensemble.models[0], batch, 1)[0].numpy()
    expected = np.asarray(Image.fromarray(expected / expected.max()).resize(cell.size, Image.Resampling.BILINEAR))
    assert np.abs(only_first - np.clip(expected, 0, 1)).max() < 1e-4


def test_with_a_centre_crop_the_map_covers_the_crop_and_is_zero_outside(cell):
    ensemble = _ensemble(weights=(1.0, 1e-9), center_crop=0.5)
    cam = ensemble_cam(ensemble, cell, class_index=1)
    assert cam.shape == (70, 120)
    top, left, bottom, right = crop_box(70, 120, 0.5)
    assert (top, left, bottom, right) == (17, 30, 52, 90)
    outside = np.ones_like(cam, dtype=bool)
    outside[top:bottom, left:right] = False
    assert not cam[outside].any()
    # Inside: the member's map of what it saw, the centre box of the image resized to the model's size.
    batch = build_transform((SIZE, SIZE), train=False, crop=0.5)(cell).unsqueeze(0).float() / 255.0
    expected = member_cam(ensemble.models[0], batch, 1)[0].numpy()
    expected = np.asarray(Image.fromarray(expected / expected.max()).resize((60, 35), Image.Resampling.BILINEAR))
    assert np.abs(cam[top:bottom, left:right] - np.clip(expected, 0, 1)).max() < 1e-4


def test_an_unknown_class_index_is_refused(cell):
    with pytest.raises(ValueError, match="class index 4"):
        ensemble_cam(_ensemble(), cell, class_index=4)


def test_the_overlay_is_a_png_blended_over_the_image(cell):
    png = gradcam_png(_ensemble(), cell, class_index=0)
    with Image.open(io.BytesIO(png)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == ("PNG", cell.size, "RGB")
        overlaid = np.asarray(decoded)
    assert not np.array_equal(overlaid, np.asarray(cell))
    # alpha 0 is the image itself: the colours are only ever laid over it.
    untouched = overlay_png(cell, np.ones((70, 120), dtype=np.float32), alpha=0.0)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(untouched))), np.asarray(cell))


def test_a_map_of_the_wrong_size_is_refused(cell):
    with pytest.raises(ValueError, match="map of shape"):
        overlay_png(cell, np.zeros((10, 10), dtype=np.float32))
