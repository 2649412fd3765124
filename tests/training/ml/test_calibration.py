"""Temperature scaling fitted on miscalibrated synthetic logits."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)


def _calibrated_set(n: int = 3000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, classes))
    probs = softmax(logits)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("distortion", [3.0, 0.5])
def test_temperature_scaling_undoes_over_and_under_confidence(distortion):
    logits, labels = _calibrated_set()
    distorted = logits * distortion  # 3: overconfident; 0.5: underconfident
    temperature = fit_temperature(distorted[:2000], labels[:2000])
    assert temperature == pytest.approx(distortion, rel=0.15)
    held_out, held_labels = distorted[2000:], labels[2000:]
    before, after = softmax(held_out), apply_temperature(held_out, temperature)
    assert negative_log_likelihood(after, held_labels) < negative_log_likelihood(before, held_labels) - 0.05
    assert expected_calibration_error(after, held_labels) < expected_calibration_error(before, held_labels)
    # Scaling never changes the predicted class, so accuracy is untouched.
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))
