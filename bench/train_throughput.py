"""Training throughput: the real loop (DataLoader decoding + augmentation) against a bare timm loop on tensors.

Usage: python bench/train_throughput.py FOLDER [--model efficientnet_b1] [--size 64] [--batch 16] [--steps 20]
       [--workers 2] [--warmup 5] [--repeats 2] [--threads N] [--device auto] [--json OUT]
FOLDER is an ImageFolder tree (<label>/<file> or <split>/<label>/<file>). Both loops train the same
architecture from the same random init with Adam at the same batch size and image size; the baseline feeds
pre-decoded uint8 tensors, so the ratio shows what decoding, augmentation and the loop's bookkeeping cost.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="ImageFolder tree of images")
    parser.add_argument("--model", default="efficientnet_b1", help="timm model name")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, worker start-up)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each loop; the best counts")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decoding processes")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import torch
    from run_facts import facts_line, torch_run_facts

    from training.ml.data import create_loader, folder_labels, scan_image_folder
    from training.ml.loop import Callback, CallbackList, autocast, prepare_model, resolve_device, train_one_epoch
    from training.ml.models import create_classifier
    from training.ml.transforms import build_transform, load_image

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    channels_last = device.type == "cuda"
    folder = args.folder.resolve()
    classes = folder_labels(folder)
    splits = scan_image_folder(folder, classes, val_fraction=0.0, test_fraction=0.0)
    items = splits.train + splits.val + splits.test
    total_steps = args.warmup + args.steps
    size = (args.size, args.size)

    def fresh_model():
        torch.manual_seed(0)
        model = create_classifier(args.model, len(classes), pretrained="none")
        model = prepare_model(model, device, channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=5e-4)

    # Baseline: the same images decoded and normalised once, then a plain timm forward/backward/step loop on
    # tensor slices (the bare network, without the classifier's own uint8 normalisation).
    transform = build_transform(size, train=False)
    pool = min(len(items), args.batch * 4)
    base_model, base_optimizer = fresh_model()
    raw = torch.stack([transform(load_image(path, size)) for path, _ in items[:pool]]).float().div(255)
    images = ((raw.to(device) - base_model.mean) / base_model.std).cpu()
    labels = torch.tensor([label for _, label in items[:pool]])
    net = base_model.net

    def run_baseline() -> list[float]:
        net.train()
        stamps = []
        for step in range(total_steps):
            pick = torch.arange(step * args.batch, (step + 1) * args.batch) % pool
            x = images[pick].to(device)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            y = labels[pick].to(device)
            with autocast(device, True):
                logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            base_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            base_optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
        return stamps

    # The real thing: create_loader + train_one_epoch with augmentation, timed per batch via the callback.
    class Stamps(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_batch_end(self, step: int, total: int, loss: float) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    loop_items = (items * (1 + args.batch * total_steps // len(items)))[: max(len(items), args.batch * total_steps)]
    loader = create_loader(
        loop_items,
        transform=build_transform(size, train=True),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        seed=0,
        pin_memory=device.type == "cuda",
    )
    loop_model, loop_optimizer = fresh_model()

    def run_pipeline() -> list[float]:
        stamps = Stamps()
        train_one_epoch(
            loop_model,
            loader,
            loop_optimizer,
            device=device,
            mixed_precision=True,
            channels_last=channels_last,
            callbacks=CallbackList([stamps]),
            max_steps=total_steps,
        )
        return stamps.times

    def rates(stamps: list[float]) -> tuple[float, float]:
        timed = stamps[args.warmup - 1 :] if args.warmup else stamps
        elapsed = args.batch * (len(timed) - 1) / (timed[-1] - timed[0])
        median = args.batch / statistics.median(b - a for a, b in itertools.pairwise(timed))
        return elapsed, median

    # Alternating repeats: on a shared machine another process's burst hits one run, not one side only.
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "pipeline": []}
    for _ in range(args.repeats):
        runs["baseline"].append(rates(run_baseline()))
        runs["pipeline"].append(rates(run_pipeline()))
    baseline = max(r[0] for r in runs["baseline"])
    pipeline = max(r[0] for r in runs["pipeline"])
    baseline_median = max(r[1] for r in runs["baseline"])
    pipeline_median = max(r[1] for r in runs["pipeline"])
    ratio = pipeline / baseline

    figures = {
        **torch_run_facts(torch, device),
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "images_available": len(items),
        "repeats": args.repeats,
        "baseline_images_per_s": round(baseline, 2),
        "pipeline_images_per_s": round(pipeline, 2),
        "ratio": round(ratio, 3),
        "baseline_images_per_s_median_step": round(baseline_median, 2),
        "pipeline_images_per_s_median_step": round(pipeline_median, 2),
        "ratio_median_step": round(pipeline_median / baseline_median, 3),
        "runs": runs,
    }
    print(facts_line(figures))
    print(
        f"{args.model} @ {args.size}px, batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up, "
        f"{args.workers} workers"
    )
    print(
        "                                       elapsed   median step   (images/s, best of "
        f"{args.repeats} alternating runs)"
    )
    print(f"bare timm loop on pre-decoded tensors: {baseline:8.1f}   {baseline_median:8.1f}")
    print(f"training loop with DataLoader:         {pipeline:8.1f}   {pipeline_median:8.1f}")
    print(
        f"ratio:                                 {ratio:8.3f}   {pipeline_median / baseline_median:8.3f}"
        "   (goal >= 0.9)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
