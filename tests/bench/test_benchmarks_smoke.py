"""The two ML benchmarks end to end on a tiny generated folder (smoke models, 32 px, one epoch), plus the pure
helpers they rely on: the DataLoader scoring path agrees with `Ensemble.predict_proba`, and selection ranks
the most uncertain rows first."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
COLOURS = {
    "neutrophil": (200, 60, 60),
    "eosinophil": (60, 190, 60),
    "basophil": (70, 70, 210),
    "monocyte": (200, 200, 60),
}


def write_jpeg_folder(root: Path, per_class: int = 10) -> Path:
    """`<label>/<label>_<i>.jpg`: a coloured disc per class on a smear-like background, 48 px."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            array = np.full((48, 48, 3), (232, 214, 220), dtype=np.int64)
            cy, cx = rng.integers(16, 32, 2)
            array[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = colour
            array += rng.integers(-12, 12, array.shape)
            Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(root / label / f"{label}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("bench") / "cells")


def run_script(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_active_learning_writes_curves_and_summary(jpeg_folder, tmp_path):
    out = tmp_path / "al"
    stdout = run_script(
        "bench/active_learning.py",
        "--data",
        str(jpeg_folder),
        "--out",
        str(out),
        "--profile",
        "smoke",
        "--budgets",
        "10,40",
        "--max-epochs",
        "1",
        "--min-steps",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--exploration",
        "0.25",
        "--max-class-share",
        "0.1",
    )

    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["strategy"], r["round"]) for r in rows} == {
        ("full", "2"),
        *((s, r) for s in ("random", "margin", "entropy") for r in ("0", "1")),
    }
    assert all(r["settings"].endswith("|explore 0.25|cap 0.1") for r in rows)
    pool = int(rows[0]["pool"])
    assert [int(r["labeled"]) for r in rows if r["strategy"] == "full"] == [pool]
    # 4 classes with a cap of 1 pick each cannot fill round 1's uncertainty picks: the rest come at random, so
    # every strategy still reaches the same budget.
    assert {int(r["labeled"]) for r in rows if r["round"] == "1"} == {round(pool * 0.4)}
    for strategy in ("margin", "entropy"):
        assert re.search(rf"{strategy} +seed 0 round 1: the class cap left \d of \d+ picks", stdout)
    assert "random   seed 0 round 1: the class cap" not in stdout
    assert all(0.0 <= float(r["macro_f1"]) <= 1.0 for r in rows)
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"whole-pool macro-F1 [\d.]+ \(whole pool, mean of 1 run\(s\)\); targets 95%: [\d.]+, 98%", stdout)
    for share in ("95%", "98%"):
        for strategy in ("random", "margin", "entropy"):
            assert re.search(rf"labels to {share}: {strategy} +per seed \[", stdout)
    assert {r["mode"] for r in rows if r["round"] == "0" and r["strategy"] != "full"} == {"random"}


def test_active_learning_finetune_runs_the_platform_default_on_the_index(jpeg_folder, tmp_path):
    out, cache = tmp_path / "al", tmp_path / "cache"
    stdout = run_script(
        "bench/active_learning.py",
        "--data",
        str(jpeg_folder),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--embed-size",
        "32",
        "--profile",
        "smoke",
        "--budgets",
        "10,40,70",
        "--strategies",
        "random,default,hybrid",
        "--seeds",
        "0,1",
        "--typical-until",
        "2",
        "--max-epochs",
        "1",
        "--min-steps",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        timeout=300,
    )

    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    pool = int(rows[0]["pool"])
    assert "embedding 40 of 40 images with bundled tf_efficientnet_lite0 at 32 px, crop 0.6" in stdout
    assert all("|index tf_efficientnet_lite0 32px crop 0.6|typical-until 2|" in r["settings"] for r in rows)
    curves = {s: [r for r in rows if r["strategy"] == s and r["seed"] == "1"] for s in ("random", "default", "hybrid")}
    for curve in curves.values():
        assert [int(r["labeled"]) for r in curve] == [round(pool * b / 100) for b in (10, 40, 70)]
    assert [r["mode"] for r in curves["random"]] == ["random"] * 3
    assert [r["mode"] for r in curves["hybrid"]] == ["typical", "uncertain", "uncertain"]
    # The default and the hybrid start from the same typical cells; the default then follows the queue's rule.
    assert curves["default"][0]["labeled_per_class"] == curves["hybrid"][0]["labeled_per_class"]
    for before, row in zip(curves["default"], curves["default"][1:], strict=False):
        seen = [int(n) for n in before["labeled_per_class"].split("/") if int(n)]
        assert row["mode"] == ("typical" if min(seen) < 2 else "uncertain")
    for share in ("95%", "98%"):
        for strategy in curves:
            assert re.search(rf"labels to {share}: {strategy} +per seed \[", stdout)
    assert re.search(r"curve vs random: default +(never|IS) below", stdout)
    budgets = [round(pool * b / 100) for b in (10, 40, 70)]
    assert re.search(rf"macro-F1 by labels: default +{budgets[0]}: [\d.]+ ± [\d.]+, {budgets[1]}: ", stdout)
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_active_learning_head_learner_embeds_once_and_reports_both_targets(jpeg_folder, tmp_path):
    out, cache = tmp_path / "al", tmp_path / "cache"
    head_args = [
        "bench/active_learning.py",
        "--learner",
        "head",
        "--data",
        str(jpeg_folder),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--embed-size",
        "32",
        "--labels-per-class",
        "2,4",
        "--seeds",
        "0,1",
        "--strategies",
        "random,margin,entropy,hybrid,default",
        "--typical-until",
        "3",
        "--workers",
        "0",
    ]

    stdout = run_script(*head_args, timeout=300)

    with (out / "head_results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    pool = int(rows[0]["pool"])
    assert [r["strategy"] for r in rows if r["strategy"] == "full"] == ["full"]
    for strategy in ("random", "margin", "entropy", "hybrid", "default"):
        for seed in ("0", "1"):
            curve = [int(r["labeled"]) for r in rows if r["strategy"] == strategy and r["seed"] == seed]
            assert curve == [8, 16, pool]  # 2 and 4 labels per class of 4 classes, then the whole pool
    starts = {r["strategy"]: r["mode"] for r in rows if r["round"] == "0" and r["seed"] == "0"}
    assert starts == {"full": "all", "random": "random", "margin": "random", "entropy": "random"} | {
        "hybrid": "typical",
        "default": "typical",
    }
    assert "embedding 40 of 40 images with bundled tf_efficientnet_lite0 at 32 px" in stdout
    for share in ("95%", "98%"):
        for strategy in ("random", "margin", "entropy", "hybrid", "default"):
            assert re.search(rf"labels to {share}: {strategy} +per seed \[", stdout)
    assert re.search(r"curve vs random: default +(never|IS) below", stdout)
    assert (out / "head_learning_curves.png").read_bytes()[:4] == b"\x89PNG"

    again = run_script(*head_args, timeout=300)  # the cache answers: nothing is embedded twice

    assert "images with bundled" not in again


def test_inference_throughput_prints_both_rates_and_ratio(jpeg_folder, tmp_path):
    stdout = run_script(
        "bench/inference_throughput.py",
        str(jpeg_folder),
        "--models",
        "test_efficientnet,test_efficientnet_gn",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "f.json"),
    )

    assert "scoring (read + decode + preprocess + both models + voting):" in stdout
    assert "bare timm forward of both models on pre-decoded tensors:" in stdout
    assert "ratio: " in stdout
    assert re.search(r"decode only \(the same DataLoader, no model\): +\d+\.\d images/s", stdout)
    assert (tmp_path / "f.json").is_file()


def test_scoring_path_matches_platform_predict_proba(jpeg_folder):
    from training.ml.ensemble import Ensemble
    from training.ml.models import create_classifier
    from training.ml.scoring import ensemble_score_paths

    torch.manual_seed(0)
    models = [create_classifier(name, 4, pretrained="none") for name in ("test_efficientnet", "test_efficientnet_gn")]
    ensemble = Ensemble(
        models,
        weights=[0.4, 0.6],
        temperature=1.7,
        classes=list(COLOURS),
        image_size=(32, 32),
        device=torch.device("cpu"),
    )
    paths = sorted(str(p) for p in jpeg_folder.glob("*/*.jpg"))[:12]

    scored = ensemble_score_paths(ensemble, paths, batch_size=5, num_workers=0)

    np.testing.assert_allclose(scored, ensemble.predict_proba(paths, batch_size=5), atol=1e-6)


def test_selection_takes_the_most_uncertain_rows():
    from training.ml.uncertainty import select_uncertain

    probabilities = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33], [0.6, 0.39, 0.01]])

    assert list(select_uncertain(probabilities, 2, "margin")) == [2, 1]
    assert list(select_uncertain(probabilities, 2, "entropy")) == [2, 1]
    assert list(select_uncertain(probabilities, 1, "least_confidence")) == [2]
    assert sorted(select_uncertain(probabilities, 4, "random", seed=3)) == [0, 1, 2, 3]


def test_active_learning_starts_from_local_imagenet_weights_when_asked(jpeg_folder, tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("test_efficientnet", "test_efficientnet_gn"):  # the smoke profile's members
        state = timm.create_model(name, pretrained=False, num_classes=1000).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights / f"{name}.safetensors"))
    out = tmp_path / "al"

    stdout = run_script(
        "bench/active_learning.py",
        "--data",
        str(jpeg_folder),
        "--out",
        str(out),
        "--profile",
        "smoke",
        "--budgets",
        "10,40",
        "--max-epochs",
        "1",
        "--min-steps",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--strategies",
        "random",
        "--no-full-reference",
        "--pretrained",
        "local",
        "--weights-dir",
        str(weights),
    )

    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["settings"].rsplit("|", 1)[-1] for row in rows} == {"init local"}
    assert "labels to 95%: random" in stdout
    assert "(no whole-pool run: the best mean point of any curve); targets" in stdout
    missing = subprocess.run(
        [
            sys.executable,
            "bench/active_learning.py",
            "--data",
            str(jpeg_folder),
            "--out",
            str(tmp_path / "none"),
            "--profile",
            "smoke",
            "--pretrained",
            "local",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0
    assert "pretrained='local' needs weights_dir" in missing.stderr


def test_lab_screen_prints_wall_time_memory_baseline_and_ratio(tmp_path):
    stdout = run_script(
        "bench/lab_screen.py",
        "--cases",
        "80",
        "--folds",
        "3",
        "--n-jobs",
        "1",
        "--nn-max-iter",
        "10",
        "--bootstrap",
        "20",
        "--json",
        str(tmp_path / "lab.json"),
    )

    assert re.search(r"study \(both variants, every check, \d+ files\): \d+\.\d s wall, peak RSS \d+ MB", stdout)
    assert re.search(r"baseline \(the bare 7 x 3 model fits", stdout)
    assert re.search(r"ratio study / baseline: \d+\.\d\d", stdout)
    assert "goal <= 60 s:" in stdout
    assert re.search(r"CPU time: study \d+\.\d s \(all processes\), baseline \d+\.\d s", stdout)
    figures = json.loads((tmp_path / "lab.json").read_text())
    assert figures["variables"] == 61
    assert figures["study_s"] > 0


def test_refresh_benchmark_prints_the_refresh_the_baseline_and_the_ratio(tmp_path):
    stdout = run_script(
        "bench/refresh.py",
        "--sizes",
        "3000",
        "--labeled",
        "600",
        "--dim",
        "64",
        "--threads",
        "1",
        "--shards-dir",
        str(tmp_path),
        "--json",
        str(tmp_path / "refresh.json"),
    )

    line = re.search(
        r"3,000 images, 600 labeled: refresh (\d+\.\d+) s .*bare matmul (\d+\.\d+) s; ratio (\d+\.\d); "
        r"CV macro-F1 (\d\.\d+); index 0\.00 GB loads from shards in (\d+\.\d+) s .*"
        r"again with unchanged shards: (\d+) µs",
        stdout,
    )
    assert line is not None, stdout
    assert float(line[1]) > 0
    assert float(line[4]) > 0.5  # the synthetic classes are learnable
    assert (tmp_path / "refresh.json").is_file()
    run = json.loads((tmp_path / "refresh.json").read_text())["runs"][0]
    assert 0 < run["load_cached_s"] < run["load_shards_s"]


def test_channels_last_benchmark_times_both_layouts_and_prints_their_ratio(tmp_path):
    stdout = run_script(
        "bench/channels_last.py",
        "--models",
        "test_efficientnet",
        "--sizes",
        "32,40",
        "--batch",
        "4",
        "--eval-batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--pretrained",
        "none",
        "--json",
        str(tmp_path / "layouts.json"),
    )

    assert re.search(r"test_efficientnet @ 32px  train .* img/s \(\d+\.\d\dx\)   eval .* \(\d+\.\d\dx\)", stdout)
    rows = json.loads((tmp_path / "layouts.json").read_text())["rows"]
    assert [row["size"] for row in rows] == [32, 40]
    for row in rows:
        for kind in ("train", "eval"):
            nchw, last = row[f"{kind}_nchw_images_per_s"], row[f"{kind}_channels_last_images_per_s"]
            assert nchw > 0
            assert last > 0
            assert row[f"{kind}_ratio"] == pytest.approx(last / nchw, rel=0.01)
