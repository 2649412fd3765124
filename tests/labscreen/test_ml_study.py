"""The study itself on generated cohorts: folds are stratified, every leak-free step is fitted on the training
fold only, the leak is real on pure noise and gone in the leak-free variant, the label-permutation check, cancel
and refusal, the synthetic cohort's known signal, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MinMaxScaler

from labscreen.ml.cohort import SIGNAL, noise_cohort, synthetic_cohort
from labscreen.ml.config import StudyConfig
from labscreen.ml.preprocess import PointBiserialSelector, RegressionImputer
from labscreen.ml.study import StudyCancelled, StudyRefused, bootstrap_auc, run_study

REPO = Path(__file__).resolve().parents[2]
FAST = {"models": ("logistic_regression", "decision_tree"), "bootstrap": 50, "permutation_repeats": 2}


@pytest.fixture(scope="module")
def small_cohort():
    return synthetic_cohort(n_cases=150, seed=4)


def test_folds_are_stratified(small_cohort):
    output = run_study(small_cohort, StudyConfig(folds=5, label_permutation=False, **FAST))
    folds = output.results["folds"]
    share = output.results["cohort"]["malignant"] / output.results["cohort"]["cases"]

    assert sum(f["test_cases"] for f in folds) == output.results["cohort"]["cases"]
    for fold in folds:
        assert abs(fold["test_malignant"] / fold["test_cases"] - share) < 0.05


def test_every_leak_free_step_is_fitted_on_the_training_fold_only(small_cohort):
    seen = []

    def on_fold(fold, train, test, prep):
        seen.append((train, test))
        cohort = small_cohort.subset(np.flatnonzero(np.isnan(small_cohort.values).mean(axis=1) <= 0.9))
        X, y = cohort.values[train], cohort.outcome[train]
        imputer = RegressionImputer(categorical=tuple(cohort.categorical_indices)).fit(X)
        np.testing.assert_array_equal(prep.named_steps["impute"].fill_, imputer.fill_)
        imputed = imputer.transform(X)
        scaler = MinMaxScaler().fit(imputed)
        np.testing.assert_array_equal(prep.named_steps["scale"].data_min_, scaler.data_min_)
        np.testing.assert_array_equal(prep.named_steps["scale"].data_max_, scaler.data_max_)
        selector = PointBiserialSelector(k=20).fit(scaler.transform(imputed), y)
        np.testing.assert_array_equal(prep.named_steps["select"].support_, selector.support_)
        assert not set(train) & set(test)

    run_study(small_cohort, StudyConfig(folds=4, label_permutation=False, **FAST), on_fold=on_fold)

    assert len(seen) == 4
    # The test folds cover each case once: nothing a training fold saw was scored.
    assert sorted(np.concatenate([test for _, test in seen]).tolist()) == list(range(sum(len(t) for _, t in seen)))


def test_on_pure_noise_the_published_variant_is_optimistic_and_the_leak_free_one_is_not():
    """100 cases x 1,000 noise variables, top 10 kept: selecting on every case finds noise that 'predicts' the test
    folds; selecting inside each training fold does not."""
    config = StudyConfig(
        top_k=10, models=("logistic_regression", "svm", "linear_regression"), bootstrap=0, label_permutation=False
    )
    results = run_study(noise_cohort(n_cases=100, n_variables=1000, seed=0), config).results

    for name in config.models:
        published = results["variants"]["published"][name]["mean"]["auc"]
        leak_free = results["variants"]["leak_free"][name]["mean"]["auc"]
        assert published > 0.8, (name, published)
        assert 0.35 < leak_free < 0.65, (name, leak_free)
        assert results["difference"][name]["auc"] > 0.2
    mean_leak_free = np.mean([results["variants"]["leak_free"][n]["mean"]["auc"] for n in config.models])
    assert abs(mean_leak_free - 0.5) < 0.12


def test_label_permutation_check_lands_near_chance_where_the_real_outcome_does_not(small_cohort):
    results = run_study(small_cohort, StudyConfig(folds=5, **FAST)).results
    best = results["ranking"][0]

    assert results["variants"]["leak_free"][best]["mean"]["auc"] > 0.75
    assert abs(results["label_permutation"]["leak_free_auc"] - 0.5) < 0.15
    assert results["label_permutation"]["model"] == best


def test_the_known_signal_is_found(small_cohort):
    results = run_study(small_cohort, StudyConfig(folds=5, label_permutation=False, **FAST)).results
    top = [c["variable"] for c in results["correlations"][:6]]

    assert len(set(top) & set(SIGNAL)) >= 4, top
    assert results["cohort"]["synthetic"] is True
    assert results["cohort"]["variables"] == 61


def test_cases_with_more_than_the_missing_share_are_excluded_and_counted(small_cohort):
    table = small_cohort.subset(range(len(small_cohort.ids)))
    table.values[:3, 1:] = np.nan  # three cases keep 1 of 61 values
    results = run_study(table, StudyConfig(folds=3, label_permutation=False, **FAST)).results

    assert results["cohort"]["excluded"] >= 3
    assert set(table.ids[:3]) <= set(results["cohort"]["excluded_ids"])
    assert results["cohort"]["cases"] == len(table.ids) - results["cohort"]["excluded"]


def test_cancel_stops_at_the_next_fit(small_cohort):
    calls = []

    with pytest.raises(StudyCancelled):
        run_study(
            small_cohort,
            StudyConfig(folds=3, **FAST),
            progress=lambda d, t: calls.append(d),
            should_stop=lambda: calls[-1] >= 2,
        )
    assert calls == [0, 1, 2]  # the first report is 0 of the total


def test_too_few_cases_of_a_class_for_the_folds_is_refused():
    table = synthetic_cohort(n_cases=20, seed=1)
    with pytest.raises(StudyRefused, match="stratified folds need at least 10"):
        run_study(table, StudyConfig(folds=10, **FAST))


def test_bootstrap_interval_contains_the_auc():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    scores = y + rng.standard_normal(200)
    low, high = bootstrap_auc(y, scores, samples=500, seed=0)
    assert low < roc_auc_score(y, scores) < high
    assert high - low < 0.2


def test_the_command_line_writes_every_figure(tmp_path):
    out = tmp_path / "study"
    result = subprocess.run(
        [sys.executable, "-m", "labscreen.ml", "--synthetic", "80", "--out", str(out), "--folds", "3",
         "--models", "logistic_regression,svm,neural_network", "--nn-max-iter", "20", "--bootstrap", "50"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "[SYNTHETIC DATA]" in result.stdout
    study = json.loads((out / "study.json").read_text())
    assert set(study["variants"]) == {"published", "leak_free"}
    assert study["screen_model"] in ("logistic_regression", "neural_network")
    for name in ("summary.csv", "folds.csv", "roc.csv", "correlations.csv", "importance.csv", "model.joblib"):
        assert (out / name).stat().st_size > 0
    assert (out / "roc_leak_free.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(
        [sys.executable, "-m", "labscreen.ml", "--data", str(out / "cohort.csv"), "--out", str(tmp_path / "again"),
         "--folds", "3", "--models", "logistic_regression", "--bootstrap", "0", "--no-label-permutation"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "study.json").read_text())["cohort"]["synthetic"] is True
