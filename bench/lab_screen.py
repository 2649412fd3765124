"""Lab-screen study speed: the whole study (7 models x 10 folds x both variants, bootstrap, DeLong, permutation
importance, the label-permutation check, the final screen model and every file) on a synthetic cohort of 882 cases x
61 variables, the size of the publication's cohort. Goal: at most 60 s on 2 cores.

Usage: python bench/lab_screen.py [--cases 882] [--folds 10] [--n-jobs 2] [--nn-max-iter 300] [--json OUT]

Prints the wall time and peak memory (this process and its fold workers), and a baseline measured in the same run:
the same 7 models x 10 folds fitted once on data preprocessed beforehand (the bare model fits, no protocol), with the
study / baseline ratio. The cohort is synthetic (labscreen.ml.cohort): no patient data is needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from labscreen.ml.cohort import synthetic_cohort  # noqa: E402
from labscreen.ml.config import StudyConfig  # noqa: E402
from labscreen.ml.models import model_create  # noqa: E402
from labscreen.ml.preprocess import preprocessor  # noqa: E402
from labscreen.ml.report import write_study_outputs  # noqa: E402
from labscreen.ml.study import run_study  # noqa: E402


def _cpu_seconds() -> float:
    """CPU time of this process and its fold workers (alive or ended): on a machine shared with other jobs it tells
    the work done better than the wall time does."""
    own = psutil.Process().cpu_times()
    alive = sum(c.cpu_times().user + c.cpu_times().system for c in psutil.Process().children(recursive=True))
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system + alive + ended.ru_utime + ended.ru_stime


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def baseline_seconds(table, config: StudyConfig) -> tuple[float, float]:
    """The bare fits: every model on every fold of data preprocessed once, nothing else; (wall, CPU) seconds."""
    X = preprocessor(
        categorical=tuple(table.categorical_indices), top_k=config.top_k, impute=True, scale=True, select=True, seed=0
    ).fit_transform(table.values, table.outcome)
    y = table.outcome
    started, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, _ in StratifiedKFold(config.folds, shuffle=True, random_state=0).split(X, y):
            for name in config.models:
                model_create(name, nn_max_iter=config.nn_max_iter).fit(X[train], y[train])
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=882)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=2, help="processes for the folds (the goal is on 2 cores)")
    parser.add_argument("--nn-max-iter", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--models", default=None, help="comma-separated subset (default: all seven)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)

    table = synthetic_cohort(n_cases=args.cases, seed=0)
    extra = {"models": tuple(args.models.split(","))} if args.models else {}
    config = StudyConfig(
        folds=args.folds, n_jobs=args.n_jobs, nn_max_iter=args.nn_max_iter, bootstrap=args.bootstrap, **extra
    )
    print(f"cohort: {len(table.ids)} synthetic cases x {len(table.columns)} variables; {config.folds} folds, "
          f"{len(config.models)} models, both variants, n_jobs {config.n_jobs}, {os.cpu_count()} CPUs")  # fmt: skip
    started = time.perf_counter()
    cpu_before = _cpu_seconds()
    output = run_study(table, config)
    with tempfile.TemporaryDirectory() as out:
        files = write_study_outputs(output, Path(out))
    study_s = time.perf_counter() - started
    study_cpu = _cpu_seconds() - cpu_before
    peak = _peak_mb()
    base_s, base_cpu = baseline_seconds(table, config)
    results = output.results
    best = results["ranking"][0]
    print(f"study (both variants, every check, {len(files)} files): {study_s:.1f} s wall, peak RSS {peak:.0f} MB")
    fits = f"{len(config.models)} x {config.folds}"
    print(f"baseline (the bare {fits} model fits on preprocessed data, 1 process): {base_s:.1f} s")
    print(
        f"CPU time: study {study_cpu:.1f} s (all processes), baseline {base_cpu:.1f} s; "
        f"ratio {study_cpu / base_cpu:.2f}"
    )
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (above the CPU count: the machine is shared)"
    )
    print(f"ratio study / baseline: {study_s / base_s:.2f}")
    print(f"goal <= 60 s: {'met' if study_s <= 60 else 'not met'}")
    auc = results["variants"]["leak_free"][best]["mean"]["auc"]
    published = results["variants"]["published"][best]["mean"]["auc"]
    print(f"best leak-free model {best}: AUC {auc:.3f} (as published {published:.3f})")
    print(f"screen model: {results['screen_model']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
                    "machine": platform.platform(),
                    "cpus": os.cpu_count(),
                    "cases": args.cases,
                    "variables": len(table.columns),
                    "folds": config.folds,
                    "n_jobs": config.n_jobs,
                    "study_s": round(study_s, 2),
                    "baseline_s": round(base_s, 2),
                    "ratio": round(study_s / base_s, 3),
                    "peak_rss_mb": round(peak, 1),
                    "study_cpu_s": round(study_cpu, 2),
                    "baseline_cpu_s": round(base_cpu, 2),
                    "load_average": round(os.getloadavg()[0], 1),
                    "best": best,
                    "auc_leak_free": auc,
                    "auc_published": published,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
