"""The run config: paper defaults, profiles, validation, and the JSON saved beside checkpoints."""

from __future__ import annotations

import pytest

from training.ml.config import TrainConfig, config_for_profile, load_config, save_config


def test_defaults_are_the_papers_recipe():
    config = TrainConfig()
    assert config.models == ("efficientnet_b1", "tf_efficientnetv2_b2")
    assert config.ensemble_weights == (0.4, 0.6)
    assert (config.image_size, config.batch_size, config.lr) == (256, 32, 5e-4)
    assert config_for_profile("paper") == TrainConfig(profile="paper")


def test_profiles_and_overrides():
    smoke = config_for_profile("smoke")
    assert smoke.image_size == 32
    assert smoke.max_epochs == 1
    assert smoke.pretrained == "none"
    assert config_for_profile("quick", max_epochs=7).max_epochs == 7
    with pytest.raises(ValueError, match="unknown profile"):
        config_for_profile("huge")


def test_config_json_round_trip(tmp_path):
    config = config_for_profile("quick", image_size="native", pretrained="local", weights_dir="/weights")
    assert load_config(save_config(config, tmp_path / "config.json")) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ensemble_weights": (1.0,)}, "2 models but 1 ensemble weights"),
        ({"pretrained": "local"}, "needs weights_dir"),
        ({"pretrained": "imagenet"}, "pretrained must be one of"),
        ({"image_size": 8}, "at least 16 pixels"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
    ],
)
def test_invalid_configs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
