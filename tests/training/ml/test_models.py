"""Local ImageNet weights load strictly (backbone kept, head re-initialised) and fail clearly when they do not fit."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from training.ml.models import WeightsError, create_classifier

MODEL = "test_efficientnet"


def _imagenet_weights(
    tmp_path,
    *,
    name: str = f"{MODEL}.safetensors",
    tamper: bool = False,
    drop: set[str] | None = None,
    drop_suffix: str | None = None,
):
    """A 1000-class ImageNet-style state dict saved as safetensors, the way timm/HF publish them."""
    torch.manual_seed(1)
    source = timm.create_model(MODEL, pretrained=False, num_classes=1000)
    state = {
        k: v.contiguous()
        for k, v in source.state_dict().items()
        if k not in (drop or set()) and not (drop_suffix and k.endswith(drop_suffix))
    }
    if tamper:
        state["conv_stem.weight"] = torch.zeros(8, 3, 5, 5)
    path = tmp_path / "weights" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return source, tmp_path / "weights"


@pytest.mark.parametrize("layout", [f"{MODEL}.safetensors", f"{MODEL}.r160_in1k/model.safetensors"])
def test_local_weights_load_the_backbone_and_reinitialise_the_head(tmp_path, layout):
    source, weights_dir = _imagenet_weights(tmp_path, name=layout)
    model = create_classifier(MODEL, 12, pretrained="local", weights_dir=weights_dir)
    torch.testing.assert_close(model.net.conv_stem.weight, source.conv_stem.weight)
    torch.testing.assert_close(model.net.bn1.running_var, source.bn1.running_var)
    assert model.net.classifier.weight.shape == (12, source.classifier.weight.shape[1])
    assert not torch.equal(model.net.classifier.weight, source.classifier.weight[:12])


def test_local_weights_with_a_wrong_shape_fail_clearly(tmp_path):
    _, weights_dir = _imagenet_weights(tmp_path, tamper=True)
    with pytest.raises(WeightsError, match=r"shape mismatch.*conv_stem\.weight: file \(8, 3, 5, 5\) vs model"):
        create_classifier(MODEL, 12, pretrained="local", weights_dir=weights_dir)


def test_local_weights_missing_a_backbone_tensor_fail_but_batch_norm_counters_are_optional(tmp_path):
    _, weights_dir = _imagenet_weights(tmp_path, drop_suffix="num_batches_tracked")
    model = create_classifier(MODEL, 12, pretrained="local", weights_dir=weights_dir)
    assert model.num_classes == 12
    _, weights_dir = _imagenet_weights(tmp_path / "other", drop={"bn1.weight"})
    with pytest.raises(WeightsError, match=r"1 tensors missing from the file, e.g. bn1\.weight"):
        create_classifier(MODEL, 12, pretrained="local", weights_dir=weights_dir)


def test_missing_or_non_safetensors_local_weights_fail_clearly(tmp_path):
    with pytest.raises(WeightsError, match="no local weights for test_efficientnet: tried"):
        create_classifier(MODEL, 12, pretrained="local", weights_dir=tmp_path)
    # A pickle under the expected name is refused, never unpickled.
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / f"{MODEL}.safetensors")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        create_classifier(MODEL, 12, pretrained="local", weights_dir=tmp_path)


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown timm model"):
        create_classifier("efficientnet_b99", 12)
