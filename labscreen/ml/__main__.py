"""`python -m labscreen.ml --data cases.csv --out DIR`: the whole study (both variants) on a cohort CSV, or on a
synthetic cohort with `--synthetic N`, writing every figure, plot and the screen model to DIR."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from labscreen.ml.cohort import synthetic_cohort
from labscreen.ml.config import StudyConfig
from labscreen.ml.models import MODEL_NAMES
from labscreen.ml.report import write_study_outputs
from labscreen.ml.study import StudyRefused, run_study
from labscreen.ml.table import table_read_csv, table_write_csv

_logger = logging.getLogger("labscreen.ml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labscreen.ml", description=__doc__)
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="cohort CSV: case_id, outcome (1/0), sex, age, parameters...")
    source.add_argument("--synthetic", type=int, metavar="N", help="a synthetic cohort of N cases (61 variables)")
    data.add_argument("--out", type=Path, required=True, help="output folder")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--folds", type=int, default=10)
    protocol.add_argument("--top-k", type=int, default=20)
    protocol.add_argument("--max-missing", type=float, default=0.9)
    protocol.add_argument(
        "--models", default=",".join(MODEL_NAMES), help="comma-separated subset of " + ", ".join(MODEL_NAMES)
    )
    protocol.add_argument("--no-impute", action="store_true")
    protocol.add_argument("--no-scale", action="store_true")
    protocol.add_argument("--no-select", action="store_true")
    protocol.add_argument("--nn-max-iter", type=int, default=300)
    extra = parser.add_argument_group("beyond the publication")
    extra.add_argument("--bootstrap", type=int, default=1000)
    extra.add_argument("--permutation-repeats", type=int, default=5)
    extra.add_argument("--no-label-permutation", action="store_true")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--n-jobs", type=int, default=1, help="processes for the folds")
    return parser


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    return StudyConfig(
        folds=args.folds,
        top_k=args.top_k,
        max_missing=args.max_missing,
        impute=not args.no_impute,
        scale=not args.no_scale,
        select=not args.no_select,
        models=tuple(name.strip() for name in args.models.split(",") if name.strip()),
        nn_max_iter=args.nn_max_iter,
        bootstrap=args.bootstrap,
        permutation_repeats=args.permutation_repeats,
        label_permutation=not args.no_label_permutation,
        seed=args.seed,
        n_jobs=args.n_jobs,
    )


def print_summary(results: dict, out=sys.stdout) -> None:
    cohort = results["cohort"]
    mark = "  [SYNTHETIC DATA]" if cohort["synthetic"] else ""
    print(
        f"cases {cohort['cases']} ({cohort['malignant']} malignant, {cohort['non_malignant']} not), "
        f"{cohort['variables']} variables, excluded {cohort['excluded']} (> max missing){mark}",
        file=out,
    )
    print(f"{'model':<28} {'AUC as published':>18} {'AUC leak-free':>16} {'difference':>11}", file=out)
    for name, data in results["variants"]["leak_free"].items():
        published = results["variants"]["published"][name]
        print(
            f"{data['label']:<28} {published['mean']['auc']:.3f} ± {published['sd']['auc']:.3f}    "
            f"{data['mean']['auc']:.3f} ± {data['sd']['auc']:.3f}  {results['difference'][name]['auc']:+.3f}",
            file=out,
        )
    sanity = results["label_permutation"]
    if sanity:
        print(
            f"shuffled outcomes ({sanity['model']}): AUC {sanity['published_auc']:.3f} as published, "
            f"{sanity['leak_free_auc']:.3f} leak-free",
            file=out,
        )
    print(f"screen model: {results['screen_model']}; {results['seconds']} s", file=out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data is not None:
        table = table_read_csv(args.data)
    else:
        table = synthetic_cohort(n_cases=args.synthetic, seed=args.seed)
        table_write_csv(table, args.out / "cohort.csv")
    try:
        output = run_study(table, config)
    except StudyRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_study_outputs(output, args.out)
    print_summary(output.results)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
