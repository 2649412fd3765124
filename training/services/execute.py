"""Training a run's ensemble on the worker (the training task calls `training_run_execute`): claim, heartbeat,
progress and cancel through the run's row, then register the model version (and activate it when so configured)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from releases.models import DatasetVersion, Split
from training.ml.config import TrainConfig
from training.ml.loop import Callback, TrainingCancelled
from training.ml.train import train_ensemble
from training.models import ModelVersion, TrainingRun
from training.services.versions import model_version_activate, model_version_better_than_active

_logger = logging.getLogger(__name__)

MODELS_DIR = "models"
PROGRESS_WRITE_SECONDS = 1.0
CANCEL_POLL_SECONDS = 1.0


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train the run's ensemble (the task calls this); a redelivered task finds the run claimed and returns."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker_host=socket.gethostname()
    )
    run.refresh_from_db()
    if not claimed:
        _logger.info("training run %s is %s, not queued: not training it again", run.pk, run.status)
        return run
    out_dir = Path(default_storage.path(f"{MODELS_DIR}/run-{run.pk}"))
    try:
        classes, items = _items(version=run.dataset_version)
        config = TrainConfig.from_dict(run.config)
        with _heartbeat(run_id=run.pk):
            result = train_ensemble(
                config=config,
                train_items=items[Split.TRAIN],
                val_items=items[Split.VALIDATION],
                test_items=items[Split.TEST],
                classes=classes,
                out_dir=out_dir,
                callbacks=[_RunProgress(run=run)],
            )
    except TrainingCancelled:
        _finish(run=run, status=TrainingRun.Status.CANCELLED, out_dir=out_dir, line="Cancelled.")
    except Exception as exc:
        _logger.exception("training run %s failed", run.pk)
        _finish(
            run=run,
            status=TrainingRun.Status.FAILED,
            out_dir=out_dir,
            line=f"Failed: {exc}",
            error="".join(traceback.format_exception_only(exc)).strip(),
        )
    else:
        _register(run=run, result=result, out_dir=out_dir)
    run.refresh_from_db()
    return run


def heartbeat_interval_seconds() -> float:
    return settings.HEMALOOP_TRAINING_HEARTBEAT_SECONDS


@contextlib.contextmanager
def _heartbeat(*, run_id: int):
    """Keep the run's heartbeat fresh from a background thread while the worker is alive.

    Batch callbacks also write it, but long stretches without batches (final evaluation, bootstrap
    confidence intervals, plots on a huge test split) must not get a healthy run reaped as dead.
    """
    stop = threading.Event()

    def beat() -> None:
        try:
            while True:
                TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
                if stop.wait(heartbeat_interval_seconds()):
                    break
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"training-run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _items(*, version: DatasetVersion) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Class codes in the frozen taxonomy's order (12-way heads, stable indices) and (path, index) per split."""
    classes = [row["code"] for row in sorted(version.taxonomy, key=lambda row: row["order"])]
    index = {code: i for i, code in enumerate(classes)}
    items: dict[str, list[tuple[str, int]]] = {split.value: [] for split in Split}
    for entry in version.entries.select_related("image").order_by("sha256"):
        items[entry.split].append((default_storage.path(entry.image.file), index[entry.label]))
    return classes, items


def _finish(*, run: TrainingRun, status: str, out_dir: Path, line: str, error: str = "") -> None:
    # A cancelled or failed run leaves no half-written ensemble behind, and never touches the active model.
    shutil.rmtree(out_dir, ignore_errors=True)
    run.refresh_from_db(fields=["log_tail"])
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
        status=status,
        finished_at=timezone.now(),
        error=error,
        eta_seconds=None,
        log_tail=_tail(run.log_tail, line),
    )


def _register(*, run: TrainingRun, result: Any, out_dir: Path) -> None:
    metrics = json.loads(Path(result.metrics_path).read_text(encoding="utf-8"))
    media = Path(settings.MEDIA_ROOT)
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != TrainingRun.Status.RUNNING:
            # Reaped as stale (or otherwise ended) while it trained: its result is not trusted.
            shutil.rmtree(out_dir, ignore_errors=True)
            return
        version = ModelVersion.objects.create(
            run=locked,
            out_dir=str(out_dir.relative_to(media)),
            config=metrics.get("config", run.config),
            temperature=result.temperature,
            metrics=metrics,
            plots={name: str(Path(path).relative_to(media)) for name, path in result.plot_paths.items()},
        )
        locked.status = TrainingRun.Status.SUCCEEDED
        locked.finished_at = timezone.now()
        locked.eta_seconds = 0
        locked.log_tail = _tail(locked.log_tail, f"Registered model version {version.pk}.")
        locked.save(update_fields=["status", "finished_at", "eta_seconds", "log_tail"])
        if settings.HEMALOOP_AUTO_ACTIVATE and model_version_better_than_active(version=version):
            model_version_activate(version=version, actor=run.started_by)


def _tail(log: str, line: str) -> str:
    text = f"{log}{timezone.now():%H:%M:%S} {line}\n"
    return text[-TrainingRun.LOG_TAIL_CHARS :]


class _RunProgress(Callback):
    """Writes progress, history and the heartbeat to the run's row (at most once a second, and at every epoch),
    and stops the loop when an admin asked to cancel or the run was reaped."""

    def __init__(self, *, run: TrainingRun) -> None:
        self.run_id = run.pk
        self.model_count = len(run.config.get("models", ())) or 1
        self.max_epochs = int(run.config.get("max_epochs", 1))
        self.history: list[dict[str, Any]] = list(run.history)
        self.log = run.log_tail
        self.model_index = 0
        self.model_name = ""
        self.epoch = 1
        self.batch = self.total = 0
        self.started = time.monotonic()
        self.last_write = 0.0
        self.last_poll = 0.0
        self.stop = False

    def on_model_start(self, index: int, name: str) -> None:
        self.model_index, self.model_name, self.epoch = index, name, 1
        self.log = _tail(self.log, f"Model {index + 1}/{self.model_count}: {name}")
        self._write(batch=0, total=0, force=True)

    def on_batch_end(self, step: int, total: int, loss: float) -> None:
        self.batch, self.total = step, total
        self._write(batch=step, total=total, force=step == total)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        row = {key: value for key, value in metrics.items() if isinstance(value, int | float | str | bool)}
        self.history.append(row)
        self.max_epochs = int(metrics.get("max_epochs", self.max_epochs))
        self.log = _tail(
            self.log,
            f"{self.model_name} epoch {epoch}: val loss {metrics.get('val_loss', 0):.4f}, "
            f"val macro-F1 {metrics.get('val_macro_f1', 0):.4f}",
        )
        self.epoch = epoch + 1
        self._write(batch=0, total=0, force=True, epoch_done=epoch)

    def should_stop(self) -> bool:
        due = self.last_poll == 0.0 or time.monotonic() - self.last_poll >= CANCEL_POLL_SECONDS
        if due and not self.stop:
            self.last_poll = time.monotonic()
            row = TrainingRun.objects.filter(pk=self.run_id).values("cancel_requested", "status").first()
            self.stop = row is None or row["cancel_requested"] or row["status"] != TrainingRun.Status.RUNNING
            if self.stop:  # leave the row showing where the run stopped
                self._write(batch=self.batch, total=self.total, force=True)
        return self.stop

    def _write(self, *, batch: int, total: int, force: bool, epoch_done: int | None = None) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < PROGRESS_WRITE_SECONDS:
            return
        self.last_write = now
        fields: dict[str, Any] = {
            "heartbeat_at": timezone.now(),
            "history": self.history,
            "log_tail": self.log,
            "model_index": self.model_index,
            "model_name": self.model_name,
            "model_count": self.model_count,
            "epoch": epoch_done or self.epoch,
            "max_epochs": self.max_epochs,
            "eta_seconds": self._eta(batch, total),
        }
        if total:
            fields.update(batch=batch, batches_total=total)
        TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(**fields)

    def _eta(self, batch: int, total: int) -> int | None:
        # An upper bound: early stopping may end a model before max_epochs.
        epochs_done = self.model_index * self.max_epochs + (self.epoch - 1) + (batch / total if total else 0)
        if epochs_done <= 0:
            return None
        elapsed = time.monotonic() - self.started
        remaining = self.model_count * self.max_epochs - epochs_done
        return max(0, int(elapsed / epochs_done * remaining))
