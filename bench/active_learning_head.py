"""`active_learning.py --learner head`: the oracle simulation with frozen bundled-backbone embeddings and the
platform's head per round (training.ml.heads.train_head: logistic regression on the raw pooled features, its
temperature fitted on case-grouped folds), selecting with training.ml.selection, the functions the platform's queue
uses, seeded as the platform seeds them (training.ml.selection.round_seed).

One fixed test split (20 %, stratified by class, grouped by hash pseudo-cases); the rest is the pool. Budgets are
labels per class times the number of classes, up to the whole pool. Per seed, random/margin/entropy start from the
same uniform random sample; hybrid and default start from the typical cells (TypiClust), and the strategies go on:

- random: uniform.
- margin, entropy: the platform's previous queue (training.ml.uncertainty.select_for_queue: class cap and
  exploration share, --max-class-share and --exploration; a fully trained version's queue still orders this way).
- hybrid: typical cells for the first budget only, then uncertainty (margin) with diversity
  (training.ml.selection.diverse_uncertain_select).
- typical: typical cells every round (training.ml.selection.typical_select).
- default: the platform's rule, training.ml.selection.select_next (typical while a class has fewer than
  --typical-until labels, then uncertainty with diversity).

Prints per strategy the labels needed to reach 95 % and 98 % of the whole-pool head's test macro-F1, per seed and
mean ± SD, and the ratio to random; writes head_results.csv and head_learning_curves.png (mean ± SD bands).
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import time

import numpy as np

CSV_NAME = "head_results.csv"
PNG_NAME = "head_learning_curves.png"
FIELDS = [
    "settings",
    "strategy",
    "seed",
    "round",
    "labeled",
    "pool",
    "test",
    "min_per_class",
    "mode",
    "macro_f1",
    "accuracy",
    "select_s",
    "fit_s",
    "elapsed_s",
    "date",
]
STRATEGIES = ("random", "margin", "entropy", "hybrid", "typical", "default")


def run(args, log) -> None:  # noqa: C901, PLR0915 - a linear script; splitting it would only scatter the state
    import torch
    from active_learning import capped_picks, index_pick, pool_items, pseudo_cases, summarise
    from embedding_cache import embed_files
    from sklearn.model_selection import StratifiedGroupKFold

    from training.ml.data import folder_labels
    from training.ml.heads import HeadConfig, head_probabilities, train_head
    from training.ml.metrics import accuracy, macro_f1
    from training.ml.selection import (
        embedding_space,
        min_labels_per_class,
        round_seed,
        typical_select,
    )

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    strategies = [s.strip() for s in (args.strategies or ",".join(STRATEGIES[:4] + ("default",))).split(",")]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    seeds = [int(s) for s in (args.seeds or "0,1,2,3,4").split(",")]
    folder = args.data.resolve()
    classes = folder_labels(folder)
    items = pool_items(folder, classes, per_class=args.per_class, split_seed=args.split_seed)
    paths = [p for p, _ in items]
    labels = np.array([label for _, label in items])
    n_classes = len(classes)
    vectors, _ = embed_files(
        paths,
        cache_dir=args.cache,
        backbone=args.backbone,
        image_size=args.embed_size,
        crop=args.embed_crop,
        num_workers=args.workers if args.workers is not None else 1,
        log=log,
    )
    cases = pseudo_cases(paths, max(30, len(items) // 20))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=args.split_seed)
    pool_idx, test_idx = next(folds.split(vectors, labels, cases))
    # The head is the platform's, on the raw pooled features (float16 as the index stores them: the cache holds them
    # so), its temperature fitted on folds grouped by the pseudo-cases, as the platform groups by case.
    head_config = head_config_from(HeadConfig(), args.head)
    pool_x, test_x = vectors[pool_idx], vectors[test_idx]
    pool_y, test_y, pool_cases = labels[pool_idx], labels[test_idx], cases[pool_idx]
    # The selection's geometry is the platform's: the index vectors of every cell (here: the pool), normalised.
    space = embedding_space(vectors[pool_idx], seed=args.split_seed)
    n_pool = len(pool_idx)
    counts = sorted({min(n_pool, int(b) * n_classes) for b in args.labels_per_class.split(",")} | {n_pool})
    settings = (
        f"{folder.name}|head|{args.backbone} {args.embed_size}px crop {args.embed_crop:g}|"
        f"per-class {args.per_class or 'all'}|"
        f"platform head l2 {head_config.l2:g} folds {head_config.folds} iter {head_config.cv_max_iter}/"
        f"{head_config.max_iter}|split {args.split_seed}|"
        f"explore {args.exploration:g}|"
        f"cap {args.max_class_share:g}|"
        f"typical-until {args.typical_until}|prefilter {args.prefilter}"
    )
    log(
        f"{folder}: {len(items)} images, {n_classes} classes -> pool {n_pool}, test {len(test_idx)}; "
        f"embeddings {vectors.shape[1]}-d; budgets {counts}; strategies {strategies}; seeds {seeds}"
    )
    log(f"settings: {settings}")

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / CSV_NAME
    if not csv_path.exists():
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(FIELDS)

    def evaluate(labeled: np.ndarray):
        fit_started = time.perf_counter()
        head = train_head(
            pool_x[labeled], pool_y[labeled], pool_cases[labeled], num_classes=n_classes, config=head_config
        )
        predictions = head.head.logits(test_x).argmax(axis=1)
        return head, macro_f1(test_y, predictions), accuracy(test_y, predictions), time.perf_counter() - fit_started

    def record(strategy, seed, round_, labeled, mode, f1, acc, select_s, fit_s) -> None:
        row = {
            "settings": settings,
            "strategy": strategy,
            "seed": seed,
            "round": round_,
            "labeled": len(labeled),
            "pool": n_pool,
            "test": len(test_idx),
            "min_per_class": min_labels_per_class(pool_y[labeled]),
            "mode": mode,
            "macro_f1": round(f1, 4),
            "accuracy": round(acc, 4),
            "select_s": round(select_s, 2),
            "fit_s": round(fit_s, 2),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        with csv_path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, FIELDS).writerow(row)
        if args.verbose:
            log(f"{strategy:8s} seed {seed} round {round_:2d}: {len(labeled):5d} labels ({mode}) -> macro-F1 {f1:.4f}")

    everything = np.arange(n_pool)
    _, reference_f1, reference_acc, fit_s = evaluate(everything)
    record("full", 0, 0, everything, "all", reference_f1, reference_acc, 0.0, fit_s)
    log(f"whole pool ({n_pool} labels): test macro-F1 {reference_f1:.4f}, accuracy {reference_acc:.4f}")
    for seed in seeds:
        random_start = np.sort(np.random.default_rng([seed, 1]).choice(n_pool, counts[0], replace=False))
        typical_start = None
        for strategy in strategies:
            chain_started = time.perf_counter()
            select_s = 0.0
            typical_first = strategy in ("hybrid", "typical", "default")
            if typical_first and typical_start is None:
                t = time.perf_counter()
                everyone = np.ones(n_pool, bool)
                typical_start = np.sort(
                    typical_select(
                        space, candidate=everyone, count=counts[0], cases=pool_cases, seed=round_seed(seed, 0)
                    )
                )
                select_s = time.perf_counter() - t
            labeled = typical_start if typical_first else random_start
            mode = "typical" if typical_first else "random"
            head = None
            for round_, count in enumerate(counts):
                if round_:
                    t = time.perf_counter()
                    candidate = np.ones(n_pool, bool)
                    candidate[labeled] = False
                    wanted, this_seed = count - len(labeled), round_seed(seed, round_)
                    probabilities = head_probabilities(head.head, head.temperature, pool_x)
                    if strategy == "random":
                        picks = np.flatnonzero(candidate)[
                            np.random.default_rng([this_seed, 1]).permutation(int(candidate.sum()))[:wanted]
                        ]
                        mode = "random"
                    elif strategy in ("margin", "entropy"):
                        rows = np.flatnonzero(candidate)
                        chosen, _ = capped_picks(
                            probabilities[rows],
                            wanted,
                            strategy,
                            exploration=args.exploration,
                            max_class_share=args.max_class_share,
                            seed=this_seed,
                        )
                        picks, mode = rows[chosen], "uncertain"
                    else:
                        picks, mode = index_pick(
                            strategy,
                            probabilities,
                            space,
                            candidate=candidate,
                            labels=pool_y[labeled],
                            cases=pool_cases,
                            count=wanted,
                            args=args,
                            seed=this_seed,
                        )
                    select_s = time.perf_counter() - t
                    labeled = np.sort(np.concatenate([labeled, picks]))
                    if len(labeled) != count or len(np.unique(labeled)) != count:
                        raise RuntimeError(f"{strategy}: round {round_} labeled {len(labeled)} distinct, not {count}")
                if len(labeled) == n_pool:
                    f1, acc, fit_s = reference_f1, reference_acc, 0.0  # the whole pool: the reference itself
                    head = None
                else:
                    head, f1, acc, fit_s = evaluate(labeled)
                record(strategy, seed, round_, labeled, mode, f1, acc, select_s, fit_s)
            log(f"{strategy:8s} seed {seed}: {len(counts)} rounds in {time.perf_counter() - chain_started:.1f}s")
    summarise(
        csv_path, args.out / PNG_NAME, settings, log, ylabel="test macro-F1 (the platform's head on frozen features)"
    )
    log(f"done; {platform.node() or 'this machine'}, {os.cpu_count()} CPUs")


def head_config_from(base, overrides: list[str]):
    """`base` with KEY=VALUE overrides (--head), each value parsed as the field's type."""
    import dataclasses

    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise SystemExit(f"--head {item!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        kind = types[key]
        changes[key] = value.lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)
    return dataclasses.replace(base, **changes)
