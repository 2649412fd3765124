"""Soft voting uses the configured weights, and predict_proba applies the ensemble temperature after voting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from training.ml.calibration import apply_temperature, probabilities_to_logits, softmax
from training.ml.ensemble import Ensemble, ensemble_logits, soft_vote
from training.ml.models import CellClassifier


def test_soft_vote_uses_the_configured_weights():
    p1 = np.array([[0.0, 1.0], [0.2, 0.8]])
    p2 = np.array([[0.9, 0.1], [0.6, 0.4]])
    vote = soft_vote([p1, p2], [0.4, 0.6])
    # 0.4 x 0.0 + 0.6 x 0.9 = 0.54; 0.4 x 0.2 + 0.6 x 0.6 = 0.44.
    np.testing.assert_allclose(vote, [[0.54, 0.46], [0.44, 0.56]])
    assert vote[0].argmax() == 0  # equal weights would give 0.45 / 0.55 and pick class 1
    np.testing.assert_allclose(soft_vote([p1, p2], [2, 3]), vote)  # weights are normalised
    np.testing.assert_allclose(softmax(ensemble_logits([p1, p2], [0.4, 0.6])), vote, atol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        soft_vote([p1, p2], [1.0, 0.0])


class _FixedLogits(nn.Module):
    """Returns the same logits for every image, like a model that has made up its mind."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.num_classes = len(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_ensemble_predict_proba_votes_then_applies_the_temperature(tmp_path):
    logits_a, logits_b = [2.0, 0.0, -1.0], [-1.0, 1.5, 0.0]
    members = [
        CellClassifier(_FixedLogits(logits), name=f"m{i}", mean=(0.5,) * 3, std=(0.5,) * 3)
        for i, logits in enumerate([logits_a, logits_b])
    ]
    ensemble = Ensemble(
        members,
        weights=[0.4, 0.6],
        temperature=2.0,
        classes=["a", "b", "c"],
        image_size=(32, 32),
        device=torch.device("cpu"),
    )
    image = Image.new("RGB", (40, 40), (200, 150, 160))
    image.save(tmp_path / "cell.png")
    images = [image, tmp_path / "cell.png", str(tmp_path / "cell.png")]

    expected_vote = 0.4 * softmax(np.array([logits_a])) + 0.6 * softmax(np.array([logits_b]))
    raw = ensemble.predict_proba(images, batch_size=2, calibrated=False)
    np.testing.assert_allclose(raw, np.repeat(expected_vote, 3, axis=0), atol=1e-6)
    calibrated = ensemble.predict_proba(images, batch_size=2)
    np.testing.assert_allclose(
        calibrated, np.repeat(apply_temperature(probabilities_to_logits(expected_vote), 2.0), 3, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    assert calibrated.max() < raw.max()  # T = 2 softens
