"""End to end on tiny generated images: train_ensemble, load_ensemble, the command line, cancellation."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.ml.blobs import CLASSES
from training.ml.config import config_for_profile
from training.ml.data import scan_image_folder
from training.ml.ensemble import load_ensemble
from training.ml.loop import Callback, TrainingCancelled
from training.ml.train import train_ensemble

REPO = Path(__file__).resolve().parents[3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Progress(Callback):
    def __init__(self) -> None:
        self.models: list[str] = []
        self.epochs: list[dict] = []

    def on_model_start(self, index, name):
        self.models.append(name)

    def on_epoch_end(self, epoch, metrics):
        self.epochs.append(metrics)


def test_train_ensemble_writes_checkpoints_metrics_and_plots(tmp_path, blob_folder):
    splits = scan_image_folder(blob_folder, CLASSES)
    progress = Progress()
    config = config_for_profile("smoke", max_epochs=2)
    result = train_ensemble(
        config=config,
        train_items=splits.train,
        val_items=splits.val,
        test_items=splits.test,
        classes=CLASSES,
        out_dir=tmp_path / "run",
        callbacks=[progress],
    )

    assert progress.models == ["test_efficientnet", "test_efficientnet_gn"]
    assert [(m["model_index"], m["epoch"]) for m in progress.epochs] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(path.is_file() and path.suffix == ".safetensors" for path in result.checkpoint_paths.values())
    assert set(result.plot_paths) >= {
        "training_curves",
        "confusion_ensemble",
        "roc_ensemble",
        "reliability_ensemble",
        "confusion_test_efficientnet",
    }
    for path in result.plot_paths.values():
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert Image.open(path).size[0] > 200

    metrics = json.loads(result.metrics_path.read_text())
    assert set(metrics["models"]) == {"test_efficientnet", "test_efficientnet_gn"}
    assert metrics["ensemble"]["weights"] == {"test_efficientnet": 0.4, "test_efficientnet_gn": 0.6}
    ensemble = metrics["ensemble"]["test"]
    assert ensemble["n"] == len(splits.test) == 3
    assert ensemble["per_class"]["monocyte"]["auroc"] is None  # in the class list, absent from the data
    for key in (
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "ece",
        "ece_calibrated",
        "accuracy_ci95",
        "macro_f1_ci95",
        "confusion_matrix",
    ):
        assert key in ensemble
    assert set(metrics["comparisons"]["mcnemar"]) == {
        "ensemble_vs_test_efficientnet",
        "ensemble_vs_test_efficientnet_gn",
        "test_efficientnet_vs_test_efficientnet_gn",
    }
    assert set(metrics["comparisons"]["delong"]["ensemble_vs_test_efficientnet"]) == set(CLASSES)
    assert [row["epoch"] for row in metrics["models"]["test_efficientnet"]["history"]] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["profile"] == "smoke"

    # The inference side: calibrated probabilities from paths or PIL images, reproducing the run's test metrics.
    loaded = load_ensemble(tmp_path / "run", device="cpu")
    assert loaded.weights == pytest.approx((0.4, 0.6))
    assert loaded.temperature == pytest.approx(result.temperature)
    test_paths = [path for path, _ in splits.test]
    probs = loaded.predict_proba(test_paths, batch_size=2)
    assert probs.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    from_images = loaded.predict_proba([Image.open(p) for p in test_paths])
    np.testing.assert_allclose(from_images, probs, atol=1e-5)
    labels = np.array([label for _, label in splits.test])
    assert np.mean(probs.argmax(axis=1) == labels) == pytest.approx(ensemble["accuracy"])


def test_cancelled_run_raises_and_registers_nothing(tmp_path, blob_folder):
    splits = scan_image_folder(blob_folder, CLASSES)

    class CancelAtOnce(Callback):
        def should_stop(self):
            return True

    with pytest.raises(TrainingCancelled, match="after batch 1"):
        train_ensemble(
            config=config_for_profile("smoke"),
            train_items=splits.train,
            val_items=splits.val,
            test_items=splits.test,
            classes=CLASSES,
            out_dir=tmp_path / "run",
            callbacks=[CancelAtOnce()],
        )
    assert not (tmp_path / "run" / "ensemble.json").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_command_line_trains_from_an_image_folder(tmp_path, blob_folder):
    out = tmp_path / "cli"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.ml.train",
            "--data",
            str(blob_folder),
            "--out",
            str(out),
            "--profile",
            "smoke",
            "--classes",
            ",".join(CLASSES),
            "--seed",
            "3",
            "--decode-once",
            "--frozen-blocks",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "epoch 1/1" in completed.stdout
    assert "ensemble: test accuracy" in completed.stdout
    for name in (
        "config.json",
        "ensemble.json",
        "metrics.json",
        "model0_test_efficientnet.safetensors",
        "model1_test_efficientnet_gn.safetensors",
        "plots/training_curves.png",
        "plots/confusion_ensemble.png",
        "plots/roc_ensemble.png",
        "plots/reliability_ensemble.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "config.json").read_text())
    assert (saved["seed"], saved["decode_once"], saved["frozen_blocks"]) == (3, True, 1)


def test_the_ml_package_never_imports_django():
    package = REPO / "training" / "ml"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name == "django" or name.startswith("django.") for name in names), path


def test_a_decode_once_run_evaluates_as_the_saved_ensemble_predicts_from_files(tmp_path, blob_folder, caplog):
    """Decoding every split once into memory and a centre crop (the lite profile's defaults) must not change what
    the run measures: its test metrics are those of the saved ensemble scoring the image files."""
    splits = scan_image_folder(blob_folder, CLASSES)
    config = config_for_profile("smoke", max_epochs=2, decode_once=True, center_crop=0.8)
    with caplog.at_level("INFO", logger="training.ml.members"):
        result = train_ensemble(
            config=config,
            train_items=splits.train,
            val_items=splits.val,
            test_items=splits.test,
            classes=CLASSES,
            out_dir=tmp_path / "run",
        )
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert f"decoded {total} images once at 32x32" in caplog.text
    metrics = json.loads(result.metrics_path.read_text())
    loaded = load_ensemble(tmp_path / "run", device="cpu")
    probs = loaded.predict_proba([path for path, _ in splits.test], batch_size=2)
    labels = np.array([label for _, label in splits.test])
    assert np.mean(probs.argmax(axis=1) == labels) == pytest.approx(metrics["ensemble"]["test"]["accuracy"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["decode_once"] is True
    assert loaded.center_crop == 0.8 == json.loads((tmp_path / "run" / "ensemble.json").read_text())["center_crop"]


def test_decode_once_falls_back_to_decoding_per_epoch_beyond_its_memory_cap(tmp_path, blob_folder, caplog):
    splits = scan_image_folder(blob_folder, CLASSES)
    config = config_for_profile("smoke", decode_once=True, decode_once_max_gb=1e-9)
    with caplog.at_level("INFO", logger="training.ml.members"):
        result = train_ensemble(
            config=config,
            train_items=splits.train,
            val_items=splits.val,
            test_items=splits.test,
            classes=CLASSES,
            out_dir=tmp_path / "run",
        )
    assert "decoding per epoch" in caplog.text
    assert "images once" not in caplog.text
    assert result.metrics_path.is_file()
