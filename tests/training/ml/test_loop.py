"""The loop keeps the best epoch's weights, stops early, lowers the learning rate, and can be cancelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.ml.checkpoint import load_classifier
from training.ml.config import config_for_profile
from training.ml.loop import (
    Callback,
    CallbackList,
    Evaluation,
    TrainingCancelled,
    class_weights_for,
    create_batch_scheduler,
    create_optimizer,
    fit,
    prepare_model,
    train_one_epoch,
    use_channels_last,
)
from training.ml.models import create_classifier, freeze_leading_blocks

CPU = torch.device("cpu")
LABELS = np.array([0, 1])
# Validation outcomes on two images (labels 0, 1) by predicted classes, with their macro-F1:
BOTH_RIGHT = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])  # 1.0
ONE_RIGHT = np.array([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])  # (2/3 + 0) / 2 = 1/3
BOTH_WRONG = np.array([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])  # 0.0


class ScriptedValidation:
    """Returns a fixed sequence of validation outcomes and snapshots the weights it was shown each epoch."""

    def __init__(self, outcomes: list[np.ndarray]) -> None:
        self.outcomes = outcomes
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: torch.nn.Module) -> Evaluation:
        self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return Evaluation(self.outcomes[len(self.snapshots) - 1], LABELS)


class Recorder(Callback):
    def __init__(self, stop_after_batches: int | None = None, stop_after_epochs: int | None = None) -> None:
        self.batches: list[tuple[int, int]] = []
        self.epochs: list[dict] = []
        self.stop_after_batches = stop_after_batches
        self.stop_after_epochs = stop_after_epochs

    def on_batch_end(self, step, total, loss):
        assert np.isfinite(loss)
        self.batches.append((step, total))

    def on_epoch_end(self, epoch, metrics):
        self.epochs.append(metrics)

    def should_stop(self):
        if self.stop_after_batches is not None and len(self.batches) >= self.stop_after_batches:
            return True
        return self.stop_after_epochs is not None and len(self.epochs) >= self.stop_after_epochs


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_epoch_is_kept_not_the_last(tmp_path, tiny_batches):
    torch.manual_seed(0)
    model = create_classifier("test_efficientnet", 3)
    config = config_for_profile("smoke", max_epochs=10, early_stopping_patience=2)
    validation = ScriptedValidation([ONE_RIGHT, BOTH_RIGHT, ONE_RIGHT, BOTH_WRONG, BOTH_RIGHT])
    recorder = Recorder()
    result = fit(
        model,
        train_loader=tiny_batches,
        val_loader=[],
        config=config,
        device=CPU,
        checkpoint_path=tmp_path / "best.safetensors",
        classes=["a", "b", "c"],
        callbacks=CallbackList([recorder]),
        evaluate=validation,
    )

    # Epoch 2 is best; epochs 3 and 4 are worse, and patience 2 stops after epoch 4 (epoch 5 never runs).
    assert [row["val_macro_f1"] for row in result.history] == pytest.approx([1 / 3, 1.0, 1 / 3, 0.0])
    assert (result.best_epoch, result.stopped_early) == (2, True)
    assert [m["improved"] for m in recorder.epochs] == [True, True, False, False]
    assert recorder.epochs[-1]["best_epoch"] == 2
    assert not _same(validation.snapshots[1], validation.snapshots[3])  # training did change the weights
    assert _same(model.state_dict(), validation.snapshots[1])
    saved = load_classifier(tmp_path / "best.safetensors")
    assert _same(saved.state_dict(), validation.snapshots[1])
    assert set(result.history[0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "lr",
        "seconds",
    }
    assert recorder.batches[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_learning_rate_drops_on_a_validation_loss_plateau(tiny_batches):
    model = create_classifier("test_efficientnet", 3)
    config = config_for_profile(
        "smoke", max_epochs=4, early_stopping_patience=10, plateau_patience=1, plateau_factor=0.1
    )
    result = fit(
        model,
        train_loader=tiny_batches,
        val_loader=[],
        config=config,
        device=CPU,
        evaluate=ScriptedValidation([ONE_RIGHT] * 4),
    )
    # Same loss every epoch: after two epochs without improvement (> patience 1) the rate drops for epoch 4.
    assert [row["lr"] for row in result.history] == pytest.approx([5e-4, 5e-4, 5e-4, 5e-5])


def test_should_stop_cancels_after_the_current_batch(tiny_batches):
    model = create_classifier("test_efficientnet", 3)
    recorder = Recorder(stop_after_batches=3)
    with pytest.raises(TrainingCancelled, match="after batch 3 of 4"):
        fit(
            model,
            train_loader=tiny_batches,
            val_loader=[],
            config=config_for_profile("smoke", max_epochs=5),
            device=CPU,
            callbacks=CallbackList([recorder]),
            evaluate=ScriptedValidation([ONE_RIGHT] * 5),
        )
    assert len(recorder.batches) == 3
    assert recorder.epochs == []


def test_should_stop_between_epochs_cancels_with_the_history_so_far(tiny_batches):
    model = create_classifier("test_efficientnet", 3)
    recorder = Recorder(stop_after_epochs=1)
    with pytest.raises(TrainingCancelled) as cancelled:
        fit(
            model,
            train_loader=tiny_batches,
            val_loader=[],
            config=config_for_profile("smoke", max_epochs=5),
            device=CPU,
            callbacks=CallbackList([recorder]),
            evaluate=ScriptedValidation([ONE_RIGHT] * 5),
        )
    assert len(recorder.batches) == 4
    assert [row["epoch"] for row in cancelled.value.history] == [1]


def test_class_weights_only_when_imbalanced_in_auto_mode():
    balanced = [0] * 10 + [1] * 8 + [2] * 12
    assert class_weights_for(balanced, 4, mode="auto", imbalance_ratio=10) is None
    skewed = [0] * 100 + [1] * 5 + [2] * 20
    weights = class_weights_for(skewed, 4, mode="auto", imbalance_ratio=10)
    # Inverse frequency scaled so that present classes average 1: N / (classes present x count).
    assert weights.tolist() == pytest.approx([125 / 300, 125 / 15, 125 / 60, 1.0])
    assert class_weights_for(skewed, 4, mode="off", imbalance_ratio=10) is None
    assert class_weights_for(balanced, 4, mode="on", imbalance_ratio=10) is not None


def test_cosine_schedule_warms_up_then_decays_to_zero_per_batch(tiny_batches):
    model = create_classifier("test_efficientnet", 3)
    config = config_for_profile(
        "smoke", max_epochs=3, early_stopping_patience=10, lr=1e-3, lr_schedule="cosine", warmup_fraction=0.25
    )
    optimizer = create_optimizer(model, config)
    scheduler = create_batch_scheduler(optimizer, config, steps_per_epoch=4)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # 12 batches, 3 of warm-up (1/3, 2/3, 3/3 of lr), then a cosine over the other 9 from lr down to zero after
    # the last batch.
    assert rates[:5] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3 * 0.5 * (1 + np.cos(np.pi / 9))])
    assert all(a > b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    # Stepped per batch inside fit: each epoch starts lower, and the plateau rule is not applied on top.
    result = fit(
        create_classifier("test_efficientnet", 3),
        train_loader=tiny_batches,
        val_loader=[],
        config=config,
        device=CPU,
        evaluate=ScriptedValidation([ONE_RIGHT] * 3),
    )
    assert [row["lr"] for row in result.history] == pytest.approx([1e-3 / 3, rates[4], rates[8]])


def test_adamw_trains_only_what_is_not_frozen(tiny_batches):
    torch.manual_seed(0)
    model = create_classifier("test_efficientnet", 3)
    frozen = freeze_leading_blocks(model, 1)
    assert frozen == sum(
        p.numel() for m in (model.net.conv_stem, model.net.bn1, model.net.blocks[0]) for p in m.parameters()
    )
    config = config_for_profile("smoke", max_epochs=1, optimizer="adamw", weight_decay=0.05, frozen_blocks=1)
    optimizer = create_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == (
        sum(p.numel() for p in model.parameters()) - frozen
    )
    before = {k: v.detach().clone() for k, v in model.net.named_parameters()}
    fit(
        model,
        train_loader=tiny_batches,
        val_loader=[],
        config=config,
        device=CPU,
        evaluate=ScriptedValidation([ONE_RIGHT]),
    )
    after = dict(model.net.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("conv_stem.", "bn1.", "blocks.0.")) for k in changed)
    assert any(k.startswith("blocks.1.") for k in changed)
    assert any(k.startswith("classifier.") for k in changed)
    with pytest.raises(ValueError, match="stages; cannot freeze 99"):
        freeze_leading_blocks(model, 99)


def test_a_cpu_trains_in_channels_last_layout_and_computes_the_same_gradients(tiny_batches):
    # Channels-last is a memory layout, not a different network: a training step in each layout from the same
    # start must compute the same loss gradients (up to float rounding), and the CPU run must really use it.
    # (Weights after several steps are not compared: on random labels with batch-4 BatchNorm the rounding
    # differences grow chaotically.)
    config = config_for_profile("smoke", max_epochs=1)
    assert config.channels_last
    assert use_channels_last(config, CPU)
    assert not use_channels_last(config.replace(channels_last=False), CPU)
    gradients, losses = {}, {}
    for layout in (True, False):
        torch.manual_seed(0)
        model = prepare_model(create_classifier("test_efficientnet", 3), CPU, layout)
        assert model.net.conv_stem.weight.is_contiguous(memory_format=torch.channels_last) == layout
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        losses[layout] = train_one_epoch(model, tiny_batches[:1], optimizer, device=CPU, channels_last=layout)
        gradients[layout] = {name: p.grad.contiguous() for name, p in model.named_parameters()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert any(g.abs().max() > 1e-3 for g in gradients[False].values())
    for name, gradient in gradients[True].items():
        # Relative to the tensor's largest entry (the two layouts sum the same products in different orders),
        # plus float32 noise for gradients that are zero in exact arithmetic (a bias just before a BatchNorm).
        scale = gradients[False][name].abs().max()
        assert (gradient - gradients[False][name]).abs().max() <= 1e-3 * scale + 1e-5, name
