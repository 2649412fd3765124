"""The lab-screen study, run both ways on the same folds: "as published" (steps 2, 4 and 5 fitted on every case
before cross-validation, so the test folds leak into imputation, scaling and variable selection) and leak-free
(the same steps fitted inside each training fold, exactly as a scikit-learn Pipeline would). Beyond the
publication: bootstrap AUC intervals, calibration, DeLong between the two best models, permutation importance of
the best model and a label-permutation sanity check."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.inspection import permutation_importance
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from labscreen.ml.config import StudyConfig
from labscreen.ml.models import MODEL_LABELS, has_probability, model_create, model_scores
from labscreen.ml.preprocess import missing_share, point_biserial, preprocessor
from labscreen.ml.table import LabTable
from training.ml.stats import delong_test

_logger = logging.getLogger(__name__)

METRICS = ("accuracy", "precision", "recall", "f1", "auc")
VARIANTS = ("published", "leak_free")
VARIANT_LABELS = {"published": "As published", "leak_free": "Leak-free"}
ROC_POINTS = 200
CALIBRATION_BINS = 10


class StudyCancelled(Exception):
    """should_stop() said stop: nothing of the study is kept."""


class StudyRefused(ValueError):
    """The cohort cannot carry the study (too few cases of a class for the folds, one class only)."""


@dataclass
class StudyOutput:
    """The study's figures (JSON-ready) and the screen model: the leak-free pipeline of the best model that gives
    a probability, fitted on all included cases."""

    results: dict
    screen_model: Pipeline


Progress = Callable[[int, int], None]


def _fold_metrics(y: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "auc": float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan"),
    }


def bootstrap_auc(y: np.ndarray, scores: np.ndarray, *, samples: int, seed: int) -> tuple[float, float] | None:
    """Percentile 95 % interval of the AUC over cases resampled with replacement (all resamples at once: the AUC is
    the Mann-Whitney statistic of the mid-ranks)."""
    if samples <= 0:
        return None
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(y), (samples, len(y)))
    labels = y[pick]
    ranks = rankdata(scores[pick], axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    usable = (positives > 0) & (negatives > 0)
    rank_sum = (ranks * labels).sum(axis=1)
    aucs = (rank_sum[usable] - positives[usable] * (positives[usable] + 1) / 2) / (
        positives[usable] * negatives[usable]
    )
    if aucs.size == 0:
        return None
    low, high = np.quantile(aucs, [0.025, 0.975])
    return float(low), float(high)


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[list[float], list[float]]:
    if len(fpr) > ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [round(float(v), 4) for v in fpr], [round(float(v), 4) for v in tpr]


def calibration_bins(y: np.ndarray, probability: np.ndarray, *, bins: int = CALIBRATION_BINS) -> dict:
    """Reliability diagram data: per equal-width probability bin the mean predicted probability, the observed share
    of malignant cases and the count; plus the Brier score."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "predicted": float(probability[inside].mean()),
                    "observed": float(y[inside].mean()),
                    "count": int(inside.sum()),
                }
            )
    return {"bins": rows, "brier": float(np.mean((probability - y) ** 2))}


class _Runner:
    def __init__(self, table: LabTable, config: StudyConfig, progress: Progress | None, should_stop) -> None:
        self.table = table
        self.config = config
        self.progress = progress or (lambda done, total: None)
        self.should_stop = should_stop or (lambda: False)
        self.done = 0
        self.total = 0

    def step(self) -> None:
        self.done += 1
        self.progress(self.done, self.total)
        if self.should_stop():
            raise StudyCancelled

    def bare(self) -> _Runner:
        """A copy without the callbacks, to send to another process."""
        return _Runner(self.table, self.config, None, None)

    def prep(self, categorical: tuple[int, ...]) -> Pipeline:
        c = self.config
        return preprocessor(
            categorical=categorical, top_k=c.top_k, impute=c.impute, scale=c.scale, select=c.select, seed=c.seed
        )

    def model(self, name: str):
        return model_create(name, seed=self.config.seed, nn_max_iter=self.config.nn_max_iter)


def _fit_score(model, X_train, y_train, X_test) -> tuple[object, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        # Defaults as published: the MLP may stop at max_iter, logistic regression's lbfgs at 100 iterations.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # A training fold smaller than the MLP's batch of 48 (tiny cohorts) makes it one batch: that is fine.
        warnings.filterwarnings("ignore", message="Got `batch_size`", category=UserWarning)
        model.fit(X_train, y_train)
    return model, model.predict(X_test), model_scores(model, X_test)


def _fold_run(runner: _Runner, X, y, train, test, *, leak_free: bool, models: tuple[str, ...]):
    """One fold: the fitted preprocessing (leak-free only), and per model its fold metrics, test scores and the fitted
    model with the test matrix it was scored on (for the permutation importance)."""
    prep = None
    if leak_free:
        prep = runner.prep(tuple(runner.table.categorical_indices)).fit(X[train], y[train])
        X_train, X_test = prep.transform(X[train]), prep.transform(X[test])
    else:
        X_train, X_test = X[train], X[test]
    fitted = {}
    for name in models:
        model, predicted, scores = _fit_score(runner.model(name), X_train, y[train], X_test)
        fitted[name] = (_fold_metrics(y[test], predicted, scores), scores, model, X_test)
    return prep, fitted


def _cross_validate(
    runner: _Runner, X: np.ndarray, y: np.ndarray, splits, *, leak_free: bool, models: tuple[str, ...], on_fold=None
) -> dict:
    """Per model: per-fold metrics and out-of-fold scores; with leak_free, the preprocessing is fitted on each
    training fold (and applied to its test fold), else X is already preprocessed on every case. With n_jobs > 1
    the folds run in that many processes."""
    out = {name: {"folds": [], "scores": np.zeros(len(y)), "fitted": []} for name in models}
    selected_per_fold = []
    jobs = (
        delayed(_fold_run)(runner.bare(), X, y, train, test, leak_free=leak_free, models=models)
        for train, test in splits
    )
    if runner.config.n_jobs > 1:
        fold_results = Parallel(n_jobs=runner.config.n_jobs, return_as="generator")(jobs)
    else:
        fold_results = (function(*args, **kwargs) for function, args, kwargs in jobs)
    for fold, ((train, test), (prep, fitted)) in enumerate(zip(splits, fold_results, strict=True)):
        if prep is not None:
            if on_fold is not None:
                on_fold(fold, train, test, prep)
            select = prep.named_steps["select"]
            selected_per_fold.append(select.support_ if select != "passthrough" else np.arange(X.shape[1]))
        for name in models:
            metrics, scores, model, X_test = fitted[name]
            out[name]["folds"].append(metrics)
            out[name]["scores"][test] = scores
            out[name]["fitted"].append((model, X_test, test))
            runner.step()
    out["_selected"] = selected_per_fold
    return out


def _summary(y: np.ndarray, per_model: dict, config: StudyConfig, seed_offset: int) -> dict:
    models = {}
    for index, (name, data) in enumerate((k, v) for k, v in per_model.items() if not k.startswith("_")):
        folds = data["folds"]
        mean = {m: float(np.nanmean([f[m] for f in folds])) for m in METRICS}
        sd = {m: float(np.nanstd([f[m] for f in folds], ddof=1)) if len(folds) > 1 else 0.0 for m in METRICS}
        fpr, tpr, _ = roc_curve(y, data["scores"])
        fpr_list, tpr_list = _thin(fpr, tpr)
        ci = bootstrap_auc(y, data["scores"], samples=config.bootstrap, seed=config.seed + seed_offset + index)
        models[name] = {
            "label": MODEL_LABELS[name],
            "folds": folds,
            "mean": mean,
            "sd": sd,
            "auc_pooled": float(roc_auc_score(y, data["scores"])),
            "auc_ci": list(ci) if ci else None,
            "roc": {"fpr": fpr_list, "tpr": tpr_list},
        }
    return models


def _best(models: dict, *, among=None) -> list[str]:
    names = [n for n in models if among is None or among(n)]
    return sorted(names, key=lambda n: (-models[n]["mean"]["auc"], n))


def _protocol_auc(runner: _Runner, X: np.ndarray, y: np.ndarray, name: str, *, leak_free: bool) -> float:
    """Mean fold AUC of one model under one variant (the label-permutation check)."""
    splits = list(StratifiedKFold(runner.config.folds, shuffle=True, random_state=runner.config.seed).split(X, y))
    if not leak_free:
        X = runner.prep(tuple(runner.table.categorical_indices)).fit(X, y).transform(X)
    per_model = _cross_validate(runner, X, y, splits, leak_free=leak_free, models=(name,))
    return float(np.nanmean([f["auc"] for f in per_model[name]["folds"]]))


def run_study(
    table: LabTable,
    config: StudyConfig | None = None,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_fold: Callable | None = None,
) -> StudyOutput:
    """Both variants of the protocol on `table`.

    Args:
        table: the cohort (NaN = missing; outcome 1 = malignant).
        config: the protocol's settings.
        progress: progress(done, total), called after every model fit.
        should_stop: polled after every fit; True raises StudyCancelled.
        on_fold: on_fold(fold, train_rows, test_rows, fitted_preprocessor) for each leak-free fold (tests check
            that every step saw the training rows only).
    """
    config = config or StudyConfig()
    # The matrices are small: BLAS threads only fight over the cores (a 250 x 60 least squares took 10x longer with
    # two threads on a busy 2-core machine than with one).
    with threadpool_limits(limits=1):
        return _run(table, config, progress=progress, should_stop=should_stop, on_fold=on_fold)


def _run(table: LabTable, config: StudyConfig, *, progress, should_stop, on_fold) -> StudyOutput:
    started = time.perf_counter()
    runner = _Runner(table, config, progress, should_stop)
    share = missing_share(table.values)
    keep = share <= config.max_missing
    excluded = int((~keep).sum())
    cohort = table.subset(np.flatnonzero(keep))
    X, y = cohort.values, cohort.outcome
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise StudyRefused("The included cases all have the same outcome: the study needs both.")
    if counts.min() < config.folds:
        raise StudyRefused(
            f"{config.folds} stratified folds need at least {config.folds} cases of each outcome; "
            f"there are {counts[1]} malignant and {counts[0]} non-malignant."
        )
    models = config.models
    runner.total = len(models) * config.folds * 2 + (2 * config.folds if config.label_permutation else 0) + 1
    runner.progress(0, runner.total)
    splits = list(StratifiedKFold(config.folds, shuffle=True, random_state=config.seed).split(X, y))
    categorical = tuple(cohort.categorical_indices)

    # As published: steps 2, 4 and 5 see every case, test folds included.
    published_prep = runner.prep(categorical).fit(X, y)
    published = _cross_validate(runner, published_prep.transform(X), y, splits, leak_free=False, models=models)
    leak_free = _cross_validate(runner, X, y, splits, leak_free=True, models=models, on_fold=on_fold)

    variants = {
        "published": _summary(y, published, config, seed_offset=0),
        "leak_free": _summary(y, leak_free, config, seed_offset=100),
    }
    difference = {
        name: {m: variants["published"][name]["mean"][m] - variants["leak_free"][name]["mean"][m] for m in METRICS}
        for name in models
    }
    ranking = _best(variants["leak_free"])
    delong = None
    if len(ranking) >= 2:
        a, b = ranking[:2]
        test = delong_test(y, leak_free[a]["scores"], leak_free[b]["scores"])
        delong = {"model_a": a, "model_b": b, **{k: _json_float(v) for k, v in test.to_dict().items()}}

    probabilistic = _best(variants["leak_free"], among=has_probability)
    screen = probabilistic[0] if probabilistic else None
    calibration = None
    if screen is not None:
        calibration = {"model": screen, **calibration_bins(y, leak_free[screen]["scores"])}

    correlations = _correlations(cohort, published_prep, leak_free["_selected"], config)
    importance = _importance(runner, ranking[0], leak_free, y, cohort.columns, config)

    sanity = None
    if config.label_permutation:
        shuffled = np.random.default_rng(config.seed + 7).permutation(y)
        sanity = {
            "model": ranking[0],
            "published_auc": _protocol_auc(runner, X, shuffled, ranking[0], leak_free=False),
            "leak_free_auc": _protocol_auc(runner, X, shuffled, ranking[0], leak_free=True),
            "seed": config.seed + 7,
        }

    screen_model = None
    if screen is not None:
        screen_model = Pipeline([*runner.prep(categorical).steps, ("model", runner.model(screen))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            screen_model.fit(X, y)
    runner.step()

    results = {
        "config": config.to_dict(),
        "cohort": {
            "cases_in": len(table.ids),
            "excluded": excluded,
            "excluded_ids": [table.ids[i] for i in np.flatnonzero(~keep)],
            "cases": len(y),
            "malignant": int(counts[1]),
            "non_malignant": int(counts[0]),
            "variables": len(cohort.columns),
            "columns": list(cohort.columns),
            "synthetic": bool(table.synthetic),
            "notes": table.notes,
        },
        "folds": [
            {"fold": i + 1, "test_cases": len(test), "test_malignant": int(y[test].sum())}
            for i, (_, test) in enumerate(splits)
        ],
        "variants": variants,
        "difference": difference,
        "ranking": ranking,
        "delong": delong,
        "screen_model": screen,
        "calibration": calibration,
        "correlations": correlations,
        "importance": importance,
        "label_permutation": sanity,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return StudyOutput(results=results, screen_model=screen_model)


def _json_float(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _correlations(cohort: LabTable, published_prep: Pipeline, selected_per_fold, config: StudyConfig) -> list[dict]:
    """The ranking table (step 5, as the publication computes it on every case) and, per variable, in how many
    leak-free training folds it was selected."""
    select = published_prep.named_steps["select"]
    if select == "passthrough":
        r, p = point_biserial(published_prep.transform(cohort.values), cohort.outcome)
        order = np.argsort(-np.abs(r), kind="stable")
        chosen = set(range(len(cohort.columns)))
    else:
        r, p, order = select.r_, select.p_, select.ranking_
        chosen = set(select.support_.tolist())
    folds_selected = np.zeros(len(cohort.columns), dtype=int)
    for support in selected_per_fold:
        folds_selected[support] += 1
    return [
        {
            "rank": rank + 1,
            "variable": cohort.columns[j],
            "r": float(r[j]),
            "p": float(p[j]),
            "selected": j in chosen,
            "leak_free_folds": int(folds_selected[j]),
        }
        for rank, j in enumerate(order)
    ]


def _importance(runner: _Runner, name: str, leak_free: dict, y: np.ndarray, columns, config: StudyConfig) -> list:
    """Permutation importance (AUC drop) of the best leak-free model on each held-out fold, over the variables that
    fold's pipeline kept, averaged by variable over the folds that kept it."""
    drops: dict[str, list[float]] = {}
    for fold, (model, X_test, test) in enumerate(leak_free[name]["fitted"]):
        support = leak_free["_selected"][fold]
        found = permutation_importance(
            model,
            X_test,
            y[test],
            scoring="roc_auc",
            n_repeats=config.permutation_repeats,
            random_state=config.seed + fold,
        )
        for position, column in enumerate(support):
            drops.setdefault(columns[column], []).append(float(found.importances_mean[position]))
    rows = [
        {
            "variable": variable,
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "folds": len(values),
        }
        for variable, values in drops.items()
    ]
    return sorted(rows, key=lambda row: -row["mean"])
