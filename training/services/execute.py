"""Training a run's ensemble on the worker (the training task calls `training_run_execute`): claim, heartbeat,
progress and cancel through the run's row, then register the model version (and activate it when so configured)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.jobs import JobStatus, job_claim, job_finish, job_heartbeat
from core.storage import scratch_dir, storage_local_path, storage_tree_delete, storage_tree_store
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
    claimed = job_claim(model=TrainingRun, job_id=run.pk)
    if claimed is None:
        run.refresh_from_db()
        _logger.info("training run %s is %s, not queued: not training it again", run.pk, run.status)
        return run
    run = claimed
    job_heartbeat(job=run, worker_host=socket.gethostname())
    # Trained in a folder of this worker, then stored: the web server and the scoring workers may be other hosts.
    out_dir = Path(tempfile.mkdtemp(prefix=f"hemaloop-run-{run.pk}-", dir=scratch_dir()))
    try:
        _train(run=run, out_dir=out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    run.refresh_from_db()
    return run


def _train(*, run: TrainingRun, out_dir: Path) -> None:
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
        _finish(run=run, status=JobStatus.CANCELLED, out_dir=out_dir, line="Cancelled.")
    except Exception as exc:
        _logger.exception("training run %s failed", run.pk)
        _finish(
            run=run,
            status=JobStatus.FAILED,
            out_dir=out_dir,
            line=f"Failed: {exc}",
            error="".join(traceback.format_exception_only(exc)).strip(),
        )
    else:
        _register(run=run, result=result, out_dir=out_dir)


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
        run = TrainingRun(pk=run_id)  # this thread writes only the heartbeat, never the fields the loop owns
        try:
            while job_heartbeat(job=run) and not stop.wait(heartbeat_interval_seconds()):
                pass
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
        # This worker's copy of each image (the file itself on local storage): PyTorch's loaders read paths.
        items[entry.split].append((str(storage_local_path(name=entry.image.file)), index[entry.label]))
    return classes, items


def _finish(*, run: TrainingRun, status: str, out_dir: Path, line: str, error: str = "") -> None:
    # A cancelled or failed run stores nothing, and never touches the active model.
    run.refresh_from_db(fields=["log_tail"])
    job_finish(job=run, status=status, error=error, log_tail=_tail(run.log_tail, line))


def _register(*, run: TrainingRun, result: Any, out_dir: Path) -> None:
    metrics = json.loads(Path(result.metrics_path).read_text(encoding="utf-8"))
    prefix = f"{MODELS_DIR}/run-{run.pk}"
    storage_tree_store(local_dir=out_dir, prefix=prefix)
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != JobStatus.RUNNING:
            # Reaped as stale (or otherwise ended) while it trained: its result is not trusted.
            storage_tree_delete(prefix=prefix)
            return
        version = ModelVersion.objects.create(
            run=locked,
            out_dir=prefix,
            config=metrics.get("config", run.config),
            temperature=result.temperature,
            metrics=metrics,
            plots={
                name: f"{prefix}/{Path(path).relative_to(out_dir).as_posix()}"
                for name, path in result.plot_paths.items()
            },
        )
        job_finish(
            job=locked,
            status=JobStatus.SUCCEEDED,
            log_tail=_tail(locked.log_tail, f"Registered model version {version.pk}."),
        )
        # The admin who asked for the run activates it; a run whose requester was deleted waits for an admin.
        actor = locked.requested_by
        if settings.HEMALOOP_AUTO_ACTIVATE and actor and model_version_better_than_active(version=version):
            model_version_activate(version=version, actor=actor)


def _tail(log: str, line: str) -> str:
    text = f"{log}{timezone.now():%H:%M:%S} {line}\n"
    return text[-TrainingRun.LOG_TAIL_CHARS :]


class _RunProgress(Callback):
    """Writes progress, history and the heartbeat to the run's row (at most once a second, and at every epoch),
    and stops the loop when an admin asked to cancel or the run was reaped.

    done/total count batches over the whole run as if every model trained all max_epochs: early stopping only
    makes the run end sooner (the percent jumps ahead), so the time left is an upper bound."""

    def __init__(self, *, run: TrainingRun) -> None:
        self.run = run
        self.model_count = len(run.config.get("models", ())) or 1
        self.max_epochs = int(run.config.get("max_epochs", 1))
        self.history: list[dict[str, Any]] = list(run.history)
        self.log = run.log_tail
        self.model_index = 0
        self.model_name = ""
        self.epoch = 1
        self.batch = self.batches_total = 0
        self.last_write = 0.0
        self.last_poll = 0.0
        self.stop = False

    @property
    def run_id(self) -> int:
        return self.run.pk

    def on_model_start(self, index: int, name: str) -> None:
        self.model_index, self.model_name, self.epoch, self.batch = index, name, 1, 0
        self.log = _tail(self.log, f"Model {index + 1}/{self.model_count}: {name}")
        self._write(force=True)

    def on_batch_end(self, step: int, total: int, loss: float) -> None:
        self.batch, self.batches_total = step, total
        self._write(force=step == total)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        row = {key: value for key, value in metrics.items() if isinstance(value, int | float | str | bool)}
        self.history.append(row)
        self.max_epochs = int(metrics.get("max_epochs", self.max_epochs))
        self.log = _tail(
            self.log,
            f"{self.model_name} epoch {epoch}: val loss {metrics.get('val_loss', 0):.4f}, "
            f"val macro-F1 {metrics.get('val_macro_f1', 0):.4f}",
        )
        self.epoch, self.batch = epoch + 1, 0
        self._write(force=True, epoch_done=epoch)

    def should_stop(self) -> bool:
        due = self.last_poll == 0.0 or time.monotonic() - self.last_poll >= CANCEL_POLL_SECONDS
        if due and not self.stop:
            self.last_poll = time.monotonic()
            row = TrainingRun.objects.filter(pk=self.run_id).values("cancel_requested", "status").first()
            self.stop = row is None or row["cancel_requested"] or row["status"] != JobStatus.RUNNING
            if self.stop:  # leave the row showing where the run stopped
                self._write(force=True)
        return self.stop

    def _write(self, *, force: bool, epoch_done: int | None = None) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < PROGRESS_WRITE_SECONDS:
            return
        self.last_write = now
        epochs_before = self.model_index * self.max_epochs + self.epoch - 1
        fields: dict[str, Any] = {
            "history": self.history,
            "log_tail": self.log,
            "model_index": self.model_index,
            "model_name": self.model_name,
            "model_count": self.model_count,
            "epoch": epoch_done or self.epoch,
            "max_epochs": self.max_epochs,
        }
        if self.batch:  # between epochs the row keeps showing the last batch of the one that ended
            fields.update(batch=self.batch, batches_total=self.batches_total)
        if not job_heartbeat(
            job=self.run,
            done=epochs_before * self.batches_total + self.batch,
            total=self.model_count * self.max_epochs * self.batches_total,
            **fields,
        ):
            self.stop = True  # reaped or otherwise ended meanwhile: the next should_stop() ends the loop
