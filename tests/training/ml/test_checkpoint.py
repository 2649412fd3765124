"""Checkpoints are safetensors with JSON metadata and round-trip exactly."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from training.ml.checkpoint import load_classifier, read_checkpoint_metadata, save_checkpoint
from training.ml.models import create_classifier

MODEL = "test_efficientnet"


def test_checkpoint_round_trip_is_safetensors_and_exact(tmp_path):
    torch.manual_seed(0)
    model = create_classifier(MODEL, 4)
    model.train()
    model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))  # moves batch-norm running statistics
    path = save_checkpoint(tmp_path / "m.safetensors", model, classes=["a", "b", "c", "d"], extra={"epoch": 3})

    raw = path.read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_length])  # a JSON header, not a pickle (which starts with 0x80)
    assert "conv_stem.weight" in header
    metadata = read_checkpoint_metadata(path)
    assert (metadata["model_name"], metadata["classes"], metadata["epoch"]) == (MODEL, ["a", "b", "c", "d"], 3)
    assert metadata["mean"] == pytest.approx(list(model.net.pretrained_cfg["mean"]))

    restored = load_classifier(path)
    original_state, restored_state = model.net.state_dict(), restored.net.state_dict()
    assert original_state.keys() == restored_state.keys()
    for key, value in original_state.items():
        torch.testing.assert_close(restored_state[key], value, rtol=0, atol=0)
    model.eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(restored(images), model(images))
