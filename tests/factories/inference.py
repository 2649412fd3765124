"""Stored predictions with chosen probabilities."""

from __future__ import annotations

import factory
import numpy as np

from annotation.models import CellClass
from inference.models import Prediction
from training.ml.uncertainty import prediction_stats


def _vector(probs: dict[str, float]) -> np.ndarray:
    """The probabilities in taxonomy order; the unnamed classes share what is left equally."""
    codes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
    rest = (1.0 - sum(probs.values())) / (len(codes) - len(probs))
    return np.array([probs.get(code, rest) for code in codes])


class PredictionFactory(factory.django.DjangoModelFactory):
    """PredictionFactory(model_version=v, image=i, probs={"myeloblast": 0.6}) -> that prediction, with the
    top class, confidence, margin and entropy the scorer would store for it."""

    class Meta:
        model = Prediction

    class Params:
        probs = factory.Dict({})
        vector = factory.LazyAttribute(lambda o: _vector(o.probs))
        stats = factory.LazyAttribute(lambda o: prediction_stats(o.vector[None, :]))

    probabilities = factory.LazyAttribute(lambda o: o.vector.tolist())
    predicted_class = factory.LazyAttribute(lambda o: CellClass.objects.order_by("order")[int(o.stats[0][0])])
    confidence = factory.LazyAttribute(lambda o: float(o.stats[1][0]))
    margin = factory.LazyAttribute(lambda o: float(o.stats[2][0]))
    entropy = factory.LazyAttribute(lambda o: float(o.stats[3][0]))
