"""A stand-in for the trained ensemble where a test is about pages and the loop, not about the model."""

from __future__ import annotations

import numpy as np

CODES = [
    "neutrophil",
    "band_neutrophil",
    "eosinophil",
    "basophil",
    "monocyte",
    "lymphocyte",
    "variant_lymphocyte",
    "myeloblast",
    "lymphoblast",
    "myelocyte",
    "metamyelocyte",
    "promyelocyte",
]


class FakeEnsemble:
    """Predicts every image as a neutrophil with a confidence that falls with each call's position, so margins
    (and therefore the queue order) differ per image; records how many images it scored."""

    classes = CODES

    def __init__(self) -> None:
        self.scored: list[str] = []

    def predict_proba(self, paths, batch_size: int = 32) -> np.ndarray:
        self.scored.extend(str(path) for path in paths)
        rows = []
        for index, _ in enumerate(paths):
            top = 0.9 - 0.05 * (index % 8)
            row = np.full(len(CODES), (1.0 - top) / (len(CODES) - 1))
            row[0] = top
            rows.append(row)
        return np.array(rows)

    @staticmethod
    def _score_stream(ensemble, paths, batch_size: int = 64, decoder: str = "pil"):
        probabilities = ensemble.predict_proba(paths, batch_size)
        for start in range(0, len(probabilities), batch_size):
            yield probabilities[start : start + batch_size]

    def install(self, monkeypatch) -> FakeEnsemble:
        # The one ensemble loader (scoring, predictions and opinions go through it); undone after the test.
        monkeypatch.setattr("inference.ensembles.ensemble_load", lambda out_dir: self)
        monkeypatch.setattr("inference.services.scoring.ensemble_score_stream", self._score_stream)
        return self
