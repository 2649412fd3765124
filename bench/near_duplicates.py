"""Where to draw the near-duplicate line: cosine similarity in the embedding index between a cell and copies of it with
different bytes (re-encoded, rescaled, cropped, re-encoded and rescaled), against each distinct cell's most similar
other distinct cell. Embeds as the platform's index does (training.ml.embedding: bundled backbone, pil decode).

Usage: python bench/near_duplicates.py [--data ../shared/data/pbc-dev] [--distinct 800] [--copied 200]
                                       [--size 224] [--crop 0.6] [--threads 2] [--json FILE]

Prints the quantiles of both distributions, the distinct pairs above each candidate threshold and the copies below
it. The copies are written to a temporary folder and deleted afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = ("jpeg75", "rescale90", "crop5", "jpeg60_rescale110")


def make_copies(source: Path, out_dir: Path) -> list[Path]:
    """The same cell with different bytes, as a second export or a second scan of one slide would give it."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    w, h = image.size
    paths = []
    for name in VARIANTS:
        if name == "jpeg75":
            copy = image
            quality = 75
        elif name == "rescale90":
            copy = image.resize((round(w * 0.9), round(h * 0.9)), Image.BICUBIC)
            quality = 95
        elif name == "crop5":
            dx, dy = round(w * 0.05), round(h * 0.05)
            copy = image.crop((dx, dy, w - dx, h - dy))
            quality = 95
        else:
            copy = image.resize((round(w * 1.1), round(h * 1.1)), Image.BILINEAR)
            quality = 60
        path = out_dir / f"{source.stem}_{name}.jpg"
        copy.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pbc-dev"))
    parser.add_argument("--distinct", type=int, default=800, help="distinct cells, spread over the classes")
    parser.add_argument("--copied", type=int, default=200, help="of them, cells that get four copies each")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--crop", type=float, default=1.0, help="centred fraction of each side (HEMALOOP_INDEX_CROP)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--vectors", help="an .npz to save the embeddings in, or to read them from if it exists")
    args = parser.parse_args()

    import numpy as np
    import torch

    from training.ml.embedding import bundled_backbone, embed_paths
    from training.ml.neighbours import index_center

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    with open(data / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(args.seed)
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row["label"], []).append(row["path"])
    per_class = -(-args.distinct // len(by_class))
    chosen = []
    for label in sorted(by_class):
        paths = by_class[label]
        chosen += [paths[i] for i in rng.permutation(len(paths))[:per_class]]
    chosen = [data / p for p in chosen[: args.distinct]]
    copied = [chosen[i] for i in rng.permutation(len(chosen))[: args.copied]]

    started = time.perf_counter()
    n_copies = len(copied) * len(VARIANTS)
    if args.vectors and Path(args.vectors).exists():
        with np.load(args.vectors) as stored:
            vectors = stored["vectors"]
        assert len(vectors) == len(chosen) + n_copies, "the saved vectors are of another sample"
    else:
        backbone = bundled_backbone()
        with tempfile.TemporaryDirectory() as tmp:
            copies = [make_copies(path, Path(tmp)) for path in copied]
            flat = [path for group in copies for path in group]
            size = (args.size, args.size)
            vectors = np.concatenate(
                list(embed_paths(backbone, chosen + flat, image_size=size, num_workers=0, crop=args.crop))
            )
        if args.vectors:
            np.savez(args.vectors, vectors=vectors)
    seconds = time.perf_counter() - started
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} torch threads {args.threads}".strip(),
        "distinct": len(chosen),
        "copies": n_copies,
        "image_size": args.size,
        "crop": args.crop,
        "embedding_seconds": round(seconds, 1),
    }
    # Plain cosine, and cosine less the index mean (what the platform measures).
    center = index_center(vectors)
    for name, offset in (("plain", None), ("centered", center)):
        result[name] = measure(vectors, chosen, copied, offset)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def measure(vectors, chosen, copied, center) -> dict:
    import numpy as np

    from training.ml.neighbours import cosine_top_k, unit_rows

    originals, copy_vectors = vectors[: len(chosen)], vectors[len(chosen) :]

    # Each distinct cell's nearest other distinct cell.
    _, nearest = cosine_top_k(originals, originals, k=1, skip=np.arange(len(originals)), center=center)
    distinct_nn = nearest[:, 0]
    # Each copy against its own original.
    index = {path: i for i, path in enumerate(chosen)}
    own = np.repeat([index[path] for path in copied], len(VARIANTS))
    unit, copy_unit = unit_rows(originals, center), unit_rows(copy_vectors, center)
    copy_sim = (unit[own] * copy_unit).sum(axis=1)
    per_variant = {
        name: [float(x) for x in np.quantile(copy_sim[i :: len(VARIANTS)], [0.0, 0.01, 0.5])]
        for i, name in enumerate(VARIANTS)
    }
    # Does a copy find its own original first among all distinct cells?
    top_index, _ = cosine_top_k(copy_vectors, originals, k=1, center=center)
    own_first = float((top_index[:, 0] == own).mean())

    quantiles = [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999, 1.0]
    result = {
        "distinct_nn_quantiles": {str(q): float(np.quantile(distinct_nn, q)) for q in quantiles},
        "copy_quantiles": {str(q): float(np.quantile(copy_sim, q)) for q in quantiles},
        "copy_by_variant_min_p01_median": per_variant,
        "copy_finds_its_original_first": own_first,
        "thresholds": {},
    }
    for threshold in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.94, 0.95, 0.96, 0.965, 0.97, 0.98, 0.99):
        result["thresholds"][str(threshold)] = {
            "distinct_cells_flagged": int((distinct_nn >= threshold).sum()),
            "copies_missed": int((copy_sim < threshold).sum()),
            "caught_by_variant": {
                name: round(float((copy_sim[i :: len(VARIANTS)] >= threshold).mean()), 3)
                for i, name in enumerate(VARIANTS)
            },
        }
    return result


if __name__ == "__main__":
    main()
