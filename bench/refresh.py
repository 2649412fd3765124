"""The queue refresh without the one-time embedding: train the head on the labeled rows of an index (3 case-grouped
folds + the final fit), fit its temperature, rescore every row, and choose the queue (training.ml.selection.select_next
in the index's embedding space: margin with diversity and exploration at these label counts) as
inference.services.heads does; plus loading the index from its shard files.

Usage: python bench/refresh.py [--sizes 42000,1000000] [--labeled 10000,50000] [--dim 1280] [--classes 12]
                               [--threads 2] [--shards-dir DIR] [--json FILE]

The index is synthetic (class centres plus noise in float16, cases of about 100 cells), because its values do not
change the time of any step. The same-run baseline is a bare numpy matrix product of the same size: the (N, D)
float16 index converted and multiplied by a (D, C) matrix once; the ratio says how many such products the whole
refresh costs. Writing the priorities (one UPDATE and top_n rows) is left to bench/queue_latency.py's database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def synthetic_index(n: int, dim: int, classes: int, *, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32) * (5.0 / dim**0.5)  # separable, not trivially
    labels = rng.integers(0, classes, n)
    matrix = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 65_536):
        part = slice(start, min(n, start + 65_536))
        noise = rng.standard_normal((part.stop - part.start, dim), dtype=np.float32)
        matrix[part] = centres[labels[part]] + noise
    cases = rng.integers(0, max(1, n // 100), n)
    return matrix, labels, cases


def bare_product(matrix, weight) -> float:
    import numpy as np

    started = time.perf_counter()
    for start in range(0, len(matrix), 65_536):
        np.asarray(matrix[start : start + 65_536], dtype=np.float32) @ weight
    return time.perf_counter() - started


def refresh(matrix, labels, cases, labeled: int, classes: int) -> dict:
    import numpy as np

    from training.ml.heads import head_probabilities, train_head
    from training.ml.selection import SELECTION_SEED, Projection, round_seed, select_next

    n = len(matrix)
    # Warm-up: torch's first LBFGS step and thread pool start-up are not part of a refresh in a running worker.
    train_head(matrix[:60], labels[:60], np.arange(60) % 3, num_classes=classes)
    rows = np.random.default_rng(1).permutation(n)
    train_rows = np.sort(rows[:labeled])
    started = time.perf_counter()
    result = train_head(matrix[train_rows], labels[train_rows], cases[train_rows], num_classes=classes)
    trained = time.perf_counter()
    probabilities = head_probabilities(result.head, result.temperature, matrix)
    rescored = time.perf_counter()
    candidate = np.ones(n, dtype=bool)
    candidate[train_rows] = False
    mode, chosen = select_next(
        Projection(matrix, seed=SELECTION_SEED),
        candidate=candidate,
        labels=labels[train_rows],
        count=1000,
        probabilities=probabilities,
        cases=cases,
        exploration=0.1,
        seed=round_seed(SELECTION_SEED, 1),
    )
    selected = time.perf_counter()
    return {
        "train_calibrate_s": trained - started,
        "rescore_s": rescored - trained,
        "select_s": selected - rescored,
        "total_s": selected - started,
        "selection": mode,
        "chosen": len(chosen),
        "cv_macro_f1": result.metrics["cv_macro_f1"],
        "temperature": result.temperature,
    }


def shard_load(matrix, folder: Path, shard_size: int = 4096) -> tuple[float, float, float]:
    """Seconds to load the index from .npz shards (index_stack, through the worker's IndexCache as index_load does),
    to get it again from that cache with the same shard key, and to read the same bytes as one raw file."""
    import hashlib

    import numpy as np

    from training.ml.embedding import IndexCache, index_stack, shard_bytes, shard_read

    n, dim = matrix.shape
    names, key = [], []
    for start in range(0, n, shard_size):
        path = folder / f"shard-{start:08d}.npz"
        content = shard_bytes(np.arange(start, min(n, start + shard_size)), matrix[start : start + shard_size])
        path.write_bytes(content)
        names.append(path)
        # index_load's key: each shard row's id, file, count and checksum (recorded at write time, not hashed here).
        key.append((len(key), path.name, min(n, start + shard_size) - start, hashlib.sha256(content).hexdigest()))
    raw = folder / "raw.bin"
    matrix.tofile(raw)

    def shards():
        for path in names:
            with path.open("rb") as handle:
                yield shard_read(handle)

    cache = IndexCache()
    started = time.perf_counter()
    ids, loaded = cache.get(tuple(key), lambda: index_stack(shards(), dim=dim, count=n))
    shards_s = time.perf_counter() - started
    assert len(ids) == n
    assert loaded.shape == matrix.shape

    def reread():
        raise AssertionError("unchanged shards were read again")

    started = time.perf_counter()
    assert cache.get(tuple(key), reread)[1] is loaded
    cached_s = time.perf_counter() - started
    cache.clear()
    started = time.perf_counter()
    np.fromfile(raw, dtype=np.float16).reshape(n, dim)
    raw_s = time.perf_counter() - started
    for path in [*names, raw]:
        path.unlink()
    return shards_s, cached_s, raw_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="42000,1000000", help="index sizes, comma-separated")
    parser.add_argument("--labeled", default="10000,50000", help="labeled rows per size, comma-separated")
    parser.add_argument("--dim", type=int, default=1280, help="vector length (Lite0's pooled features: 1280)")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--shards-dir", default="", help="where to time loading from shard files (default: a temp dir)")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    labeled = [int(s) for s in args.labeled.split(",")]
    figures = {"machine": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads, "runs": []}
    for n, n_labeled in zip(sizes, labeled, strict=True):
        matrix, labels, cases = synthetic_index(n, args.dim, args.classes)
        weight = np.random.default_rng(2).normal(size=(args.dim, args.classes)).astype(np.float32)
        baseline = min(bare_product(matrix, weight) for _ in range(3))
        run = refresh(matrix, labels, cases, n_labeled, args.classes)
        with tempfile.TemporaryDirectory(dir=args.shards_dir or None) as folder:
            shards_s, cached_s, raw_s = shard_load(matrix, Path(folder))
        run |= {
            "images": n,
            "labeled": n_labeled,
            "baseline_matmul_s": baseline,
            "ratio": run["total_s"] / baseline,
            "index_gb": matrix.nbytes / 1e9,
            "load_shards_s": shards_s,
            "load_cached_s": cached_s,
            "load_raw_s": raw_s,
        }
        figures["runs"].append(run)
        print(
            f"{n:>9,} images, {n_labeled:,} labeled: refresh {run['total_s']:.2f} s "
            f"(train+calibrate {run['train_calibrate_s']:.2f}, rescore {run['rescore_s']:.2f}, "
            f"select {run['select_s']:.2f}, {run['selection']}); bare matmul {baseline:.3f} s; "
            f"ratio {run['ratio']:.1f}; "
            f"CV macro-F1 {run['cv_macro_f1']:.3f}; index {run['index_gb']:.2f} GB loads from shards in "
            f"{shards_s:.2f} s (one raw file: {raw_s:.2f} s; again with unchanged shards: {cached_s * 1e6:.0f} µs)",
            flush=True,
        )
        del matrix
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
