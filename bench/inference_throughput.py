"""Inference throughput: scoring image files with the calibrated ensemble against a bare timm forward on tensors.

Usage: python bench/inference_throughput.py FOLDER [--image-size 256] [--batch-size 256] [--amp/--no-amp]
       [--device auto] [--num-workers N] [--limit N] [--count N] [--warmup 3] [--models a,b] [--json OUT]
       [--decoders pil,device]
FOLDER is an ImageFolder tree (<label>/<file> or <split>/<label>/<file>). The scoring path is what the
platform's pool scoring runs, minus the database: read + decode in DataLoader workers + preprocess + both
members + calibrated soft voting (`training.ml.scoring.ensemble_score_paths`), once per decoder: "pil" (decoding
and resizing in the workers, as training does; the platform's default) and "device" (workers only read the
files; JPEGs are decoded in batches on the device, nvJPEG on a GPU). The baseline, in the same run,
is a bare forward of the two timm networks on pre-decoded, normalised tensors already on the device. Models are
randomly initialised (no weights download); speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLATFORM_POOL = 42_000  # the goal's pool size: rescored in <= 20 s on an H100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="ImageFolder tree of images")
    parser.add_argument("--models", default="efficientnet_b1,tf_efficientnetv2_b2", help="comma-separated timm names")
    parser.add_argument("--weights", default="0.4,0.6", help="soft-voting weights, one per model")
    parser.add_argument("--image-size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast and channels-last on CUDA (no effect on a CPU)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--num-workers", type=int, help="decoding processes (default: the platform's choice)")
    parser.add_argument("--limit", type=int, help="use only the first N images of the folder")
    parser.add_argument("--count", type=int, help="score N paths, cycling through the folder (e.g. 42000)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (cudnn autotune, workers)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--decoders", default="pil,device", help="comma-separated: pil (workers), device (batched)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import torch

    from training.ml.data import default_num_workers, folder_labels, scan_image_folder
    from training.ml.ensemble import Ensemble
    from training.ml.loop import autocast, resolve_device
    from training.ml.models import create_classifier
    from training.ml.scoring import DECODERS, ensemble_score_paths, input_batches
    from training.ml.tensor_data import decode_items

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    channels_last = cuda and args.amp
    if cuda:
        torch.backends.cudnn.benchmark = True
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    weights = [float(w) for w in args.weights.split(",")]
    if len(weights) != len(names):
        weights = [1.0] * len(names)
    folder = args.folder.resolve()
    classes = folder_labels(folder)
    splits = scan_image_folder(folder, classes, val_fraction=0.0, test_fraction=0.0)
    items = sorted(splits.train + splits.val + splits.test)[: args.limit]
    paths = [path for path, _ in items]
    if args.count:
        paths = (paths * (args.count // len(paths) + 1))[: args.count]
    size = (args.image_size, args.image_size)
    workers = default_num_workers(device.type) if args.num_workers is None else args.num_workers
    if len(paths) <= args.warmup * args.batch_size:
        parser.error(
            f"{len(paths)} images leave nothing to time after {args.warmup} warm-up batches of "
            f"{args.batch_size}; lower --warmup or --batch-size, or raise --count"
        )

    torch.manual_seed(0)
    models = [create_classifier(name, len(classes), pretrained="none") for name in names]
    # A temperature other than 1 so the calibration step does real work.
    ensemble = Ensemble(
        models,
        weights=weights,
        temperature=1.5,
        classes=classes,
        image_size=size,
        device=device,
        mixed_precision=args.amp,
    )

    decoders = [name.strip() for name in args.decoders.split(",") if name.strip()]
    unknown = sorted(set(decoders) - set(DECODERS))
    if unknown or not decoders:
        parser.error(f"--decoders: choose from {', '.join(DECODERS)} (got {args.decoders!r})")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def scoring(decoder: str) -> tuple[float, int]:
        """Images/s of the platform's scoring path, timed from the end of the warm-up batches to the returned
        calibrated probabilities; and how many images were timed."""
        stamps: dict[str, float] = {}

        def on_batch(index: int, done: int) -> None:
            if index == args.warmup - 1:
                sync()
                stamps["start"], stamps["done"] = time.perf_counter(), done

        if args.warmup == 0:
            stamps["start"], stamps["done"] = time.perf_counter(), 0
        probabilities = ensemble_score_paths(
            ensemble,
            paths,
            batch_size=args.batch_size,
            num_workers=workers,
            channels_last=channels_last,
            decoder=decoder,
            on_batch=on_batch,
        )
        sync()
        timed = len(probabilities) - stamps["done"]
        return timed / (time.perf_counter() - stamps["start"]), timed

    def decode_only(decoder: str) -> float:
        """Images/s of the same input pipeline with no model: near the scoring rate, the input is the bottleneck;
        far above it, the overlap with the networks is."""
        batches = input_batches(
            paths, size=size, device=device, batch_size=args.batch_size, num_workers=workers, decoder=decoder
        )
        done, started, index = 0, time.perf_counter(), -1
        for index, images in enumerate(batches):
            if index == args.warmup - 1:
                sync()
                done, started = 0, time.perf_counter()
            elif index >= args.warmup:
                done += len(images)
        sync()
        return done / (time.perf_counter() - started) if index >= args.warmup else float("nan")

    per_decoder = {decoder: scoring(decoder) for decoder in decoders}

    # Baseline: the same images decoded once (the scoring path's own decoding) and normalised per member on the
    # device; then only the two networks' forward passes, cycling through the batch tensors.
    decoded, _ = decode_items([(path, 0) for path in paths[: args.batch_size * 8]], size, num_workers=workers)
    decoded = decoded.to(device)
    inputs = []
    for model in ensemble.models:
        x = (decoded.float().div(255) - model.mean) / model.std
        inputs.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    nets = [model.net for model in ensemble.models]
    batches = max(1, len(decoded) // args.batch_size)
    steps = max(1, (len(paths) - args.warmup * args.batch_size) // args.batch_size)

    def bare_step(step: int) -> None:
        start = (step % batches) * args.batch_size
        for net, x in zip(nets, inputs, strict=True):
            with autocast(device, args.amp):
                net(x[start : start + args.batch_size])

    with torch.no_grad():
        for step in range(args.warmup):
            bare_step(step)
        sync()
        started = time.perf_counter()
        for step in range(steps):
            bare_step(step)
        sync()
    bare_rate = steps * min(args.batch_size, len(decoded)) / (time.perf_counter() - started)

    results = {}
    for decoder, (rate, timed) in per_decoder.items():
        results[decoder] = {
            "scoring_images_per_s": round(rate, 1),
            "images_timed": timed,
            "ratio": round(rate / bare_rate, 3),
            "decode_only_images_per_s": round(decode_only(decoder), 1),
            "seconds_for_42000": round(PLATFORM_POOL / rate, 1),
        }
    first = results[decoders[0]]
    figures = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "models": names,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "amp": args.amp and cuda,
        "channels_last": channels_last,
        "num_workers": workers,
        "images_scored": len(paths),
        "warmup_batches": args.warmup,
        "bare_forward_images_per_s": round(bare_rate, 1),
        # The first decoder's figures at the top level, as earlier result files have them.
        "decoder": decoders[0],
        **first,
        "decoders": results,
    }
    print(
        f"{figures['date']}  {figures['device']}{' ' + figures['gpu'] if cuda else ''} "
        f"({figures['cpu_count']} CPUs, {figures['usable_cpus']} usable, {figures['torch_threads']} torch "
        f"threads), torch {figures['torch']}, load average {figures['load_average_1m_at_end']}"
    )
    print(
        f"{' + '.join(names)} @ {args.image_size}px, batch {args.batch_size}, "
        f"AMP {'bf16 + channels-last' if figures['amp'] else 'off'}, {workers} DataLoader workers, "
        f"{first['images_timed']} images timed after {args.warmup} warm-up batches"
    )
    print(f"bare timm forward of both models on pre-decoded tensors:    {bare_rate:10.1f} images/s")
    for decoder, result in results.items():
        print(f"decoder {decoder}:")
        print(
            f"scoring (read + decode + preprocess + both models + voting): {result['scoring_images_per_s']:10.1f}"
            " images/s"
        )
        print(f"ratio: {result['ratio']:.3f} (goal >= 0.9)")
        print(
            f"decode only (the same DataLoader, no model):                 "
            f"{result['decode_only_images_per_s']:10.1f} images/s"
        )
        print(
            f"{PLATFORM_POOL:,} images rescored in {result['seconds_for_42000']} s at this rate "
            "(goal <= 20 s on an H100 at 256 px with AMP)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
