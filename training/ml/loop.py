"""The training loop: Adam, ReduceLROnPlateau, early stopping on validation macro-F1 keeping the best weights."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn
from torch.utils.data import DataLoader

from training.ml.checkpoint import save_checkpoint
from training.ml.config import TrainConfig
from training.ml.metrics import accuracy, macro_f1
from training.ml.models import CellClassifier

_logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):  # noqa: N818 - a signal, not an error
    """A callback's should_stop() returned True; raised after the batch (or epoch) in progress finished."""

    def __init__(self, message: str, *, history: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.history = history or []


@runtime_checkable
class TrainingCallback(Protocol):
    """What the loop calls. Subclass `Callback` to implement only some of the methods.

    on_batch_end(step, total, loss): after every training batch; step is 1-based within the epoch and total
    is the number of batches per epoch. on_epoch_end(epoch, metrics): after validation; metrics holds the
    epoch's history row plus "model", "model_index", "max_epochs", "best_epoch" and "improved".
    should_stop(): polled after every batch and every epoch; True cancels the run (`TrainingCancelled`).
    Optionally, on_model_start(index, name) before each ensemble member starts training.
    """

    def on_batch_end(self, step: int, total: int, loss: float) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...


class Callback:
    """No-op base for progress reporting and cancellation."""

    def on_model_start(self, index: int, name: str) -> None:
        """Called before ensemble member `index` (timm name `name`) starts training."""

    def on_batch_end(self, step: int, total: int, loss: float) -> None:
        """Called after every training batch."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after every validated epoch."""

    def should_stop(self) -> bool:
        return False


class CallbackList:
    """Fans calls out to several callbacks; tolerates duck-typed objects lacking optional methods."""

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.callbacks = list(callbacks)

    def _each(self, method: str, *args: Any) -> None:
        for callback in self.callbacks:
            function = getattr(callback, method, None)
            if function is not None:
                function(*args)

    def on_model_start(self, index: int, name: str) -> None:
        self._each("on_model_start", index, name)

    def on_batch_end(self, step: int, total: int, loss: float) -> None:
        self._each("on_batch_end", step, total, loss)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._each("on_epoch_end", epoch, metrics)

    def should_stop(self) -> bool:
        # Every callback is asked (no short-circuit), so a stateful one sees every poll.
        return any([bool(getattr(c, "should_stop", lambda: False)()) for c in self.callbacks])


def resolve_device(spec: str = "auto") -> torch.device:
    """ "auto" means CUDA when present, else CPU; anything else is passed to torch.device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it (no loss scaling needed); full precision elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move `model` to `device`, in channels-last layout when asked (faster convolutions)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Channels-last on every device: oneDNN's CPU convolutions gain from it too (a lite training
    step runs 1.1-1.6x faster on a 2-core CPU: bench/README.md, "Channels-last on a CPU")."""
    return config.channels_last


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    class_weights: torch.Tensor | None = None,
    mixed_precision: bool = True,
    channels_last: bool = False,
    callbacks: CallbackList | None = None,
    max_steps: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass over `loader`; returns the mean training loss.

    Args:
        model: the classifier (already on `device`).
        loader: training batches of (uint8 images, labels).
        optimizer: updates `model`'s parameters.
        device: where to compute.
        class_weights: per-class loss weights, or None for plain cross-entropy.
        mixed_precision: bf16 autocast on CUDA.
        channels_last: feed channels-last batches.
        callbacks: progress and cancellation.
        max_steps: stop after this many batches (benchmarks).
        scheduler: stepped after every batch (per-batch schedules such as cosine).
    """
    callbacks = callbacks or CallbackList()
    model.train()
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    weights = class_weights.to(device) if class_weights is not None else None
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for step, (images, labels) in enumerate(loader, start=1):
        images = _to_device(images, device, channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, mixed_precision):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(labels)
        seen += len(labels)
        callbacks.on_batch_end(step, total, float(loss.detach()))
        if callbacks.should_stop():
            raise TrainingCancelled(f"cancelled after batch {step} of {total}")
        if step >= total:
            break
    return float(loss_sum) / max(seen, 1)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    mixed_precision: bool = True,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits (N, C) and labels (N,) for every batch of `loader`, in order."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with autocast(device, mixed_precision):
            logits = model(_to_device(images, device, channels_last))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    if not all_logits:
        return np.zeros((0, getattr(model, "num_classes", 0)), np.float32), np.zeros(0, np.int64)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy().astype(np.int64)


@dataclass
class Evaluation:
    """A model's outputs on one split."""

    logits: np.ndarray
    labels: np.ndarray
    loss: float = field(init=False)
    accuracy: float = field(init=False)
    macro_f1: float = field(init=False)

    def __post_init__(self) -> None:
        logits = torch.as_tensor(self.logits, dtype=torch.float32)
        labels = torch.as_tensor(self.labels, dtype=torch.int64)
        self.loss = float(F.cross_entropy(logits, labels)) if len(labels) else float("nan")
        predictions = self.logits.argmax(axis=1)
        self.accuracy = accuracy(self.labels, predictions)
        self.macro_f1 = macro_f1(self.labels, predictions)


@dataclass
class FitResult:
    """History and the best epoch of one model's training; the model holds the best weights afterwards."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_macro_f1: float
    best_val_loss: float
    stopped_early: bool
    checkpoint_path: Path | None
    best_evaluation: Evaluation | None = None


def class_weights_for(
    labels: Sequence[int], num_classes: int, *, mode: str, imbalance_ratio: float
) -> torch.Tensor | None:
    """Inverse-frequency loss weights (mean 1 over present classes), or None when not wanted.

    Args:
        labels: training labels.
        num_classes: head size.
        mode: "on", "off", or "auto" (on when the largest class outnumbers the smallest by > imbalance_ratio).
        imbalance_ratio: the "auto" threshold.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    if mode == "off" or not present.any():
        return None
    ratio = counts[present].max() / counts[present].min()
    if mode == "auto" and ratio <= imbalance_ratio:
        return None
    weights = np.ones(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    _logger.info("class-weighted loss (largest/smallest class = %.1f)", ratio)
    return torch.as_tensor(weights, dtype=torch.float32)


def create_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the parameters that train (frozen blocks have `requires_grad=False`)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=config.lr, weight_decay=config.weight_decay)


def create_batch_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch schedule of `config.lr_schedule` "cosine" (linear warm-up, then cosine to zero over
    `max_epochs`), or None for "plateau", which steps once per epoch on the validation loss instead."""
    if config.lr_schedule != "cosine":
        return None
    total = max(1, config.max_epochs * steps_per_epoch)
    warmup = int(config.warmup_fraction * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    model: CellClassifier,
    *,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path | None = None,
    checkpoint_metadata: dict[str, Any] | None = None,
    classes: Sequence[str] = (),
    class_weights: torch.Tensor | None = None,
    callbacks: CallbackList | None = None,
    model_index: int = 0,
    evaluate: Callable[[nn.Module], Evaluation] | None = None,
) -> FitResult:
    """Train until `max_epochs` or `early_stopping_patience` epochs without a better validation macro-F1.

    Whenever validation macro-F1 improves (ties broken by lower validation loss) the weights are written to
    `checkpoint_path` and kept in memory; at the end the model is restored to those best weights, so a late
    worse epoch never becomes the model. The learning rate follows `config.lr_schedule` (see `TrainConfig`).

    Args:
        model: the classifier to train (moved to `device`).
        train_loader: augmented training batches.
        val_loader: un-augmented validation batches.
        config: optimiser, schedule and stopping settings.
        device: where to train.
        checkpoint_path: where the best checkpoint goes (None: keep it in memory only).
        checkpoint_metadata: extra metadata stored with the checkpoint.
        classes: class codes (stored with the checkpoint).
        class_weights: loss weights from `class_weights_for`, or None.
        callbacks: progress and cancellation.
        model_index: position in the ensemble (reported to callbacks).
        evaluate: replaces the validation pass (tests script a validation sequence with it).
    """
    callbacks = callbacks or CallbackList()
    channels_last = use_channels_last(config, device)
    model = prepare_model(model, device, channels_last)
    optimizer = create_optimizer(model, config)
    batch_scheduler = create_batch_scheduler(optimizer, config, steps_per_epoch=len(train_loader))
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
        )
        if batch_scheduler is None
        else None
    )

    def default_evaluate(m: nn.Module) -> Evaluation:
        return Evaluation(
            *predict_logits(
                m, val_loader, device=device, mixed_precision=config.mixed_precision, channels_last=channels_last
            )
        )

    evaluate = evaluate or default_evaluate
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_evaluation: Evaluation | None = None
    best_epoch, best_f1, best_loss = 0, -1.0, float("inf")
    stale_epochs = 0
    stopped_early = False
    for epoch in range(1, config.max_epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        try:
            train_loss = train_one_epoch(
                model,
                train_loader,
                optimizer,
                device=device,
                class_weights=class_weights,
                mixed_precision=config.mixed_precision,
                channels_last=channels_last,
                callbacks=callbacks,
                scheduler=batch_scheduler,
            )
        except TrainingCancelled as cancelled:
            raise TrainingCancelled(str(cancelled), history=history) from None
        evaluation = evaluate(model)
        if plateau is not None:
            plateau.step(evaluation.loss)
        improved = evaluation.macro_f1 > best_f1 + 1e-12 or (
            abs(evaluation.macro_f1 - best_f1) <= 1e-12 and evaluation.loss < best_loss
        )
        if improved:
            best_epoch, best_f1, best_loss, stale_epochs = epoch, evaluation.macro_f1, evaluation.loss, 0
            best_evaluation = evaluation
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path,
                    model,
                    classes=list(classes),
                    extra={
                        **(checkpoint_metadata or {}),
                        "epoch": epoch,
                        "val_macro_f1": evaluation.macro_f1,
                        "val_loss": evaluation.loss,
                    },
                )
        else:
            stale_epochs += 1
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": evaluation.loss,
            "val_accuracy": evaluation.accuracy,
            "val_macro_f1": evaluation.macro_f1,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        _logger.debug(
            "%s epoch %d/%d: train loss %.4f, val loss %.4f, val acc %.4f, val macro-F1 %.4f%s",
            getattr(model, "name", "model"),
            epoch,
            config.max_epochs,
            train_loss,
            evaluation.loss,
            evaluation.accuracy,
            evaluation.macro_f1,
            " (best)" if improved else "",
        )
        callbacks.on_epoch_end(
            epoch,
            {
                **row,
                "model": getattr(model, "name", ""),
                "model_index": model_index,
                "max_epochs": config.max_epochs,
                "best_epoch": best_epoch,
                "improved": improved,
            },
        )
        if callbacks.should_stop():
            raise TrainingCancelled(f"cancelled after epoch {epoch}", history=history)
        if stale_epochs >= config.early_stopping_patience and epoch < config.max_epochs:
            stopped_early = True
            _logger.info("early stopping after epoch %d; best epoch %d", epoch, best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        history,
        best_epoch,
        best_f1,
        best_loss,
        stopped_early,
        checkpoint_path if best_state is not None else None,
        best_evaluation,
    )
