"""Channels-last against the default (NCHW) layout: training and scoring steps of the same network, same run.

Usage: python bench/channels_last.py [--models tf_efficientnet_lite0,tf_efficientnet_lite2] [--sizes 128,160]
       [--batch 32] [--eval-batch 64] [--steps 8] [--warmup 2] [--repeats 2] [--threads N]
       [--pretrained bundled] [--device cpu] [--json OUT]
Both layouts run the project's own loop (`train_one_epoch`, `predict_logits`) on the same pre-made uint8 batches,
from the same weights, alternating, so a burst from another process hits one repeat rather than one layout. The
pixels are random: a convolution's cost does not depend on them, and no data folder is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tf_efficientnet_lite0,tf_efficientnet_lite2", help="timm model names")
    parser.add_argument("--sizes", default="128,160", help="comma-separated image sides in pixels")
    parser.add_argument("--batch", type=int, default=32, help="training images per batch (the lite profile's)")
    parser.add_argument("--eval-batch", type=int, default=64, help="scoring images per batch")
    parser.add_argument("--steps", type=int, default=8, help="timed batches per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (oneDNN picks its kernels)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each layout; the best counts")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--pretrained", default="bundled", help="weights source (none, bundled, timm, local)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive and --warmup at least 0")

    sys.path.insert(0, str(REPO))
    import torch
    from run_facts import facts_line, torch_run_facts

    from training.ml.loop import predict_logits, prepare_model, resolve_device, train_one_epoch
    from training.ml.models import create_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            batches = [
                (
                    torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, generator=generator),
                    torch.randint(0, 9, (args.batch,), generator=generator),
                )
                for _ in range(args.warmup + args.steps)
            ]
            eval_batches = [
                (
                    torch.randint(0, 256, (args.eval_batch, 3, size, size), dtype=torch.uint8, generator=generator),
                    torch.zeros(args.eval_batch, dtype=torch.int64),
                )
                for _ in range(args.warmup + args.steps)
            ]
            models = {}
            for layout in ("nchw", "channels_last"):
                torch.manual_seed(0)
                model = create_classifier(name, 9, pretrained=args.pretrained)
                model = prepare_model(model, device, layout == "channels_last")
                models[layout] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.repeats):
                for layout, (model, optimizer) in models.items():
                    cl = layout == "channels_last"
                    train_one_epoch(model, batches[: args.warmup or 1], optimizer, device=device, channels_last=cl)
                    start = time.perf_counter()
                    train_one_epoch(model, batches[args.warmup :], optimizer, device=device, channels_last=cl)
                    train_rate = args.batch * args.steps / (time.perf_counter() - start)
                    predict_logits(model, eval_batches[: args.warmup or 1], device=device, channels_last=cl)
                    start = time.perf_counter()
                    predict_logits(model, eval_batches[args.warmup :], device=device, channels_last=cl)
                    eval_rate = args.eval_batch * args.steps / (time.perf_counter() - start)
                    for kind, rate in (("train", train_rate), ("eval", eval_rate)):
                        best[(layout, kind)] = max(best.get((layout, kind), 0.0), rate)
            row = {"model": name, "size": size}
            for kind in ("train", "eval"):
                row[f"{kind}_nchw_images_per_s"] = round(best[("nchw", kind)], 2)
                row[f"{kind}_channels_last_images_per_s"] = round(best[("channels_last", kind)], 2)
                row[f"{kind}_ratio"] = round(best[("channels_last", kind)] / best[("nchw", kind)], 3)
            rows.append(row)
            print(
                f"{name} @ {size}px  train {row['train_nchw_images_per_s']:7.1f} -> "
                f"{row['train_channels_last_images_per_s']:7.1f} img/s ({row['train_ratio']:.2f}x)   "
                f"eval {row['eval_nchw_images_per_s']:7.1f} -> {row['eval_channels_last_images_per_s']:7.1f} img/s "
                f"({row['eval_ratio']:.2f}x)",
                flush=True,
            )

    figures = {
        **torch_run_facts(torch, device),
        "batch": args.batch,
        "eval_batch": args.eval_batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "pretrained": args.pretrained,
        "rows": rows,
    }
    print(
        f"{facts_line(figures)}; best of {args.repeats} alternating repeats, {args.steps} timed batches each; "
        "ratio = channels-last / NCHW"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
