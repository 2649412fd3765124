"""Steps 2, 4 and 5 of the protocol as scikit-learn transformers, so the leak-free variant can fit them inside each
training fold (a Pipeline) and the published one on every case: regression/decision-tree imputation, min-max
scaling and point-biserial variable selection."""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.tree import DecisionTreeClassifier

# A variable observed in fewer rows than this share is never a predictor of another one: requiring it would leave
# too few complete instances (the reticulocyte panel is often not ordered).
PREDICTOR_MIN_OBSERVED = 0.5


class RegressionImputer(TransformerMixin, BaseEstimator):
    """Fills each missing numeric value by a linear regression, and each missing categorical value by a decision
    tree, on the other variables, fitted on the complete instances: the rows where the target and every predictor
    variable are observed. Predictors are the variables observed in at least PREDICTOR_MIN_OBSERVED of the rows;
    where a predictor is itself missing in a row being filled, its training mean stands in. A variable with no
    complete instance (or missing only at transform time) is filled with its training mean (categorical: mode).

    Args:
        categorical: column indices imputed by a decision tree (e.g. sex).
        seed: the decision trees' random_state.
    """

    def __init__(self, categorical: tuple[int, ...] = (), seed: int = 0) -> None:
        self.categorical = categorical
        self.seed = seed

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        observed = ~np.isnan(X)
        with np.errstate(invalid="ignore"):
            means = np.nanmean(np.where(observed.any(axis=0), X, 0.0), axis=0)
        self.fill_ = np.nan_to_num(means)
        for j in self.categorical:
            column = X[observed[:, j], j]
            if column.size:
                values, counts = np.unique(column, return_counts=True)
                self.fill_[j] = values[np.argmax(counts)]
        predictors = observed.mean(axis=0) >= PREDICTOR_MIN_OBSERVED
        self.models_: dict[int, tuple[np.ndarray, object]] = {}
        for j in np.flatnonzero(~observed.all(axis=0)):
            inputs = predictors.copy()
            inputs[j] = False
            if not inputs.any():
                continue
            complete = observed[:, j] & observed[:, inputs].all(axis=1)
            if complete.sum() < 2:
                continue
            if j in self.categorical:
                model = DecisionTreeClassifier(random_state=self.seed)
            else:
                model = LinearRegression()
            model.fit(X[np.ix_(complete, inputs)], X[complete, j])
            self.models_[int(j)] = (np.flatnonzero(inputs), model)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        missing = np.isnan(X)
        if not missing.any():
            return X.copy()
        filled = np.where(missing, self.fill_, X)
        out = filled.copy()
        for j in np.flatnonzero(missing.any(axis=0)):
            if j not in self.models_:
                continue
            inputs, model = self.models_[j]
            rows = missing[:, j]
            out[rows, j] = model.predict(filled[np.ix_(rows, inputs)])
        return out


def point_biserial(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r and two-sided p of the point-biserial correlation of every column with a 0/1 outcome, as
    scipy.stats.pointbiserialr computes them (Pearson's r with the t test), vectorised over columns; a constant
    column gets r = 0, p = 1."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    xc = X - X.mean(axis=0)
    yc = y - y.mean()
    denominator = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denominator > 0, (xc * yc[:, None]).sum(axis=0) / denominator, 0.0)
    r = np.clip(r, -1.0, 1.0)
    if n <= 2:
        return r, np.ones_like(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt((n - 2) / np.maximum(1.0 - r**2, 1e-300))
    p = 2 * scipy_stats.t.sf(np.abs(t), n - 2)
    p = np.where(np.abs(r) >= 1.0, 0.0, p)
    return r, p


class PointBiserialSelector(TransformerMixin, BaseEstimator):
    """Keeps the `k` variables with the largest absolute point-biserial correlation with the outcome (ties by
    column order)."""

    def __init__(self, k: int = 20) -> None:
        self.k = k

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        self.r_, self.p_ = point_biserial(X, y)
        order = np.argsort(-np.abs(self.r_), kind="stable")
        self.ranking_ = order
        self.support_ = np.sort(order[: min(self.k, X.shape[1])])
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float64)[:, self.support_]


def preprocessor(*, categorical: tuple[int, ...], top_k: int, impute: bool, scale: bool, select: bool, seed: int):
    """Steps 2, 4 and 5 as one Pipeline; a step turned off passes its input through. Without imputation the
    models cannot take missing values, so means fill them (a documented fallback, not the protocol)."""
    steps = [
        ("impute", RegressionImputer(categorical=categorical, seed=seed) if impute else MeanImputer()),
        ("scale", MinMaxScaler() if scale else "passthrough"),
        ("select", PointBiserialSelector(k=top_k) if select else "passthrough"),
    ]
    return Pipeline(steps)


class MeanImputer(TransformerMixin, BaseEstimator):
    """Column means (0 for an empty column): what the models need when regression imputation is turned off."""

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            self.fill_ = np.nan_to_num(np.nanmean(np.where(np.isnan(X).all(axis=0), 0.0, X), axis=0))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        return np.where(np.isnan(X), self.fill_, X)


def missing_share(values: np.ndarray) -> np.ndarray:
    """Share of missing values per row (step 1 excludes rows above the threshold)."""
    values = np.asarray(values, dtype=np.float64)
    return np.isnan(values).mean(axis=1) if values.shape[1] else np.zeros(len(values))
