"""Pool scoring from files: both decoders give the training decoding's pixels and the platform's probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.ml.ensemble import Ensemble
from training.ml.models import create_classifier
from training.ml.scoring import EncodedFiles, decode_batch, ensemble_score_paths, ensemble_score_stream
from training.ml.transforms import build_transform, load_image

SIZE = (32, 32)


def _smear(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    array = np.full((height, width, 3), (232, 214, 220), dtype=np.int64)
    cy, cx = rng.integers(height // 3, 2 * height // 3), rng.integers(width // 3, 2 * width // 3)
    array[(yy - cy) ** 2 + (xx - cx) ** 2 < (height // 4) ** 2] = rng.integers(60, 200, 3)
    return np.clip(array + rng.integers(-20, 20, array.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def files(tmp_path) -> list[str]:
    """JPEGs of two sizes (neither at most half of another: libjpeg's reduced decoding stays out), a PNG, a
    grayscale JPEG and a CMYK JPEG, in a mixed order."""
    rng = np.random.default_rng(3)
    paths = []
    for i in range(9):
        height, width = ((40, 41), (36, 36), (32, 32))[i % 3]
        path = tmp_path / f"cell-{i}.jpg"
        Image.fromarray(_smear(rng, height, width)).save(path, quality=90)
        paths.append(str(path))
    png = tmp_path / "cell-png.png"
    Image.fromarray(_smear(rng, 40, 40)).save(png)
    grey = tmp_path / "cell-grey.jpg"
    Image.fromarray(_smear(rng, 40, 40)).convert("L").save(grey)
    cmyk = tmp_path / "cell-cmyk.jpg"
    Image.fromarray(_smear(rng, 40, 40)).convert("CMYK").save(cmyk)
    paths[2:2] = [str(png), str(grey)]
    paths.append(str(cmyk))
    return paths


def _training_pixels(paths: list[str]) -> torch.Tensor:
    transform = build_transform(SIZE, train=False)
    return torch.stack([transform(load_image(path, SIZE)) for path in paths])


def test_device_decoding_is_within_one_grey_level_of_the_training_decoding(files):
    transform = build_transform(SIZE, train=False)
    dataset = EncodedFiles(files, transform)
    items = [dataset[i] for i in range(len(dataset))]

    decoded = decode_batch(items, SIZE, torch.device("cpu"), transform)

    assert [data.dim() for _, data in items].count(3) == 1  # the PNG, decoded like training in the worker
    assert decoded.shape == (len(files), 3, *SIZE)
    assert decoded.dtype == torch.uint8
    difference = (decoded.int() - _training_pixels(files).int()).abs()
    assert difference.max() <= 1
    assert difference.float().mean() < 0.5


def test_a_file_that_only_looks_like_a_jpeg_fails_loudly_with_its_name(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    transform = build_transform(SIZE, train=False)
    with pytest.raises(OSError, match=r"broken\.jpg"):
        EncodedFiles([broken], transform)[0]
    # Bytes that reach the device decoder and fail there are retried with PIL, which fails too: no silent zeros.
    data = torch.frombuffer(bytearray(broken.read_bytes()), dtype=torch.uint8)
    with pytest.raises(OSError, match=r"broken\.jpg: not a readable JPEG"):
        decode_batch([(str(broken), data)], SIZE, torch.device("cpu"), transform)


@pytest.mark.parametrize(("num_workers", "crop"), [(0, 1.0), (1, 1.0), (0, 0.7)])
def test_both_decoders_score_like_the_platforms_predict_proba(files, num_workers, crop):
    torch.manual_seed(0)
    models = [create_classifier(name, 4, pretrained="none") for name in ("test_efficientnet", "test_efficientnet_gn")]
    ensemble = Ensemble(
        models,
        weights=[0.4, 0.6],
        temperature=1.7,
        classes=["a", "b", "c", "d"],
        image_size=SIZE,
        device=torch.device("cpu"),
        center_crop=crop,
    )
    expected = ensemble.predict_proba(files, batch_size=4)

    by_pil = ensemble_score_paths(ensemble, files, batch_size=4, num_workers=num_workers, decoder="pil")
    by_device = ensemble_score_paths(ensemble, files, batch_size=4, num_workers=num_workers, decoder="device")

    np.testing.assert_allclose(by_pil, expected, atol=1e-6)
    # One grey level here and there moves random-init probabilities only slightly; the order of files holds.
    np.testing.assert_allclose(by_device, expected, atol=2e-2)
    assert (by_device.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.9


def test_an_unknown_decoder_is_refused(files):
    ensemble = Ensemble(
        [create_classifier("test_efficientnet", 2, pretrained="none")],
        weights=[1.0],
        temperature=1.0,
        classes=["a", "b"],
        image_size=SIZE,
        device=torch.device("cpu"),
    )
    with pytest.raises(ValueError, match="unknown decoder"):
        ensemble_score_paths(ensemble, files, decoder="nvidia-dali")


def test_empty_input_gives_an_empty_array(tmp_path):
    ensemble = Ensemble(
        [create_classifier("test_efficientnet", 2, pretrained="none")],
        weights=[1.0],
        temperature=1.0,
        classes=["a", "b"],
        image_size=SIZE,
        device=torch.device("cpu"),
    )
    for decoder in ("pil", "device"):
        assert ensemble_score_paths(ensemble, [], decoder=decoder).shape == (0, 2)


def test_paths_may_be_path_objects(files):
    dataset = EncodedFiles([Path(files[0])], build_transform(SIZE, train=False))
    path, data = dataset[0]
    assert path == files[0]
    assert data.dim() == 1


def test_jpegs_that_training_decodes_at_a_reduced_scale_are_decoded_as_in_training(tmp_path):
    large = tmp_path / "large.jpg"  # at least twice the model size: libjpeg's DCT scaling in training
    Image.fromarray(_smear(np.random.default_rng(5), 96, 100)).save(large, quality=90)
    transform = build_transform(SIZE, train=False)

    path, data = EncodedFiles([large], transform)[0]

    assert data.dim() == 3
    assert torch.equal(
        decode_batch([(path, data)], SIZE, torch.device("cpu"), transform)[0], _training_pixels([str(large)])[0]
    )


def test_the_stream_yields_each_batch_in_file_order(files):
    torch.manual_seed(0)
    ensemble = Ensemble(
        [create_classifier("test_efficientnet", 3, pretrained="none")],
        weights=[1.0],
        temperature=1.3,
        classes=["a", "b", "c"],
        image_size=SIZE,
        device=torch.device("cpu"),
    )
    seen = []

    batches = list(
        ensemble_score_stream(
            ensemble, files, batch_size=4, num_workers=0, on_batch=lambda index, done: seen.append((index, done))
        )
    )

    assert len(files) == 12
    assert [len(b) for b in batches] == [4, 4, 4]
    assert seen == [(0, 4), (1, 8), (2, 12)]
    np.testing.assert_allclose(np.concatenate(batches), ensemble.predict_proba(files, batch_size=4), atol=1e-6)
