"""The seven models of the protocol (step 6), scikit-learn defaults unless the publication says otherwise.

The neural network 128-64-1 is sklearn's MLPClassifier(hidden_layer_sizes=(128, 64), batch_size=48, max_iter=300):
ReLU hidden layers and a logistic (sigmoid) output unit for two classes, Adam; sklearn stops before 300 epochs when
the training loss improves by less than its tol for 10 epochs (its default), which the publication does not say.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

MODEL_LABELS = {
    "sgd": "SGD",
    "svm": "SVM",
    "random_forest": "Random forest",
    "decision_tree": "Decision tree",
    "linear_regression": "Linear regression (≥ 0.5)",
    "logistic_regression": "Logistic regression",
    "neural_network": "Neural network 128-64-1",
}
MODEL_NAMES = tuple(MODEL_LABELS)


class ThresholdedLinearRegression(ClassifierMixin, BaseEstimator):
    """Ordinary least squares on the 0/1 outcome; predicts malignant where the fitted value reaches 0.5. Its raw
    output ranks cases for the AUC; it is not a probability."""

    def fit(self, X, y):
        self.regression_ = LinearRegression().fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X):
        return self.regression_.predict(X)

    def predict(self, X):
        return (self.decision_function(X) >= 0.5).astype(np.int64)


def model_create(name: str, *, seed: int = 0, nn_max_iter: int = 300):
    """A fresh unfitted model.

    Args:
        name: one of MODEL_NAMES.
        seed: random_state of the models that have one.
        nn_max_iter: epochs of the neural network (300 in the publication; tests use fewer).
    """
    if name == "sgd":
        return SGDClassifier(random_state=seed)
    if name == "svm":
        return SVC(random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(random_state=seed)
    if name == "decision_tree":
        return DecisionTreeClassifier(random_state=seed)
    if name == "linear_regression":
        return ThresholdedLinearRegression()
    if name == "logistic_regression":
        return LogisticRegression()
    if name == "neural_network":
        return MLPClassifier(hidden_layer_sizes=(128, 64), batch_size=48, max_iter=nn_max_iter, random_state=seed)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def model_scores(model, X) -> np.ndarray:
    """What ranks the cases for the AUC: the malignant probability where the model has one, else its decision
    function (SGD, SVM, linear regression)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)[:, 1]
    return model.decision_function(X)


def has_probability(name: str) -> bool:
    return name in ("random_forest", "decision_tree", "logistic_regression", "neural_network")
