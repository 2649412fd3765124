"""Running a lab-screen study on the worker (the task calls `lab_study_execute`): claim, heartbeat, progress and
cancel through the study's row, then its files in the storage under labscreen/study-<id>/ (core.storage: written in
this host's scratch folder first, so web and workers need no shared disk)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from core.jobs import JobStatus, job_claim, job_finish, job_heartbeat
from core.storage import scratch_dir, storage_tree_delete, storage_tree_store
from labscreen.ml.config import StudyConfig
from labscreen.ml.report import write_study_outputs
from labscreen.ml.study import StudyCancelled, StudyRefused, run_study
from labscreen.models import LabStudy
from labscreen.selectors import study_cohort

_logger = logging.getLogger(__name__)

STUDIES_DIR = "labscreen"
PROGRESS_WRITE_SECONDS = 1.0


class _Progress:
    """Heartbeats with done/total at most once a second, and the cancel flag read as often."""

    def __init__(self, study: LabStudy) -> None:
        self.study = study
        self.last = 0.0
        self.stop = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_WRITE_SECONDS or done >= total:
            self.last = now
            if not job_heartbeat(job=self.study, done=done, total=total):
                self.stop = True  # reaped or cancelled while queued
            elif LabStudy.objects.filter(pk=self.study.pk, cancel_requested=True).exists():
                self.stop = True

    def should_stop(self) -> bool:
        return self.stop


def lab_study_execute(*, study: LabStudy) -> LabStudy:
    """Run the study (the task calls this); a redelivered task finds it claimed and returns."""
    claimed = job_claim(model=LabStudy, job_id=study.pk)
    if claimed is None:
        study.refresh_from_db()
        return study
    study = claimed
    relative = f"{STUDIES_DIR}/study-{study.pk}"
    out_dir = Path(tempfile.mkdtemp(prefix=f"lab-study-{study.pk}-", dir=scratch_dir()))
    try:
        table, sets = study_cohort()
        job_heartbeat(job=study, cases=len(sets), synthetic=table.synthetic)
        progress = _Progress(study)
        output = run_study(
            table, StudyConfig.from_dict(study.config), progress=progress, should_stop=progress.should_stop
        )
        paths = write_study_outputs(output, out_dir)
        storage_tree_store(local_dir=out_dir, prefix=relative)
    except StudyCancelled:
        job_finish(job=study, status=JobStatus.CANCELLED)
    except StudyRefused as exc:
        job_finish(job=study, status=JobStatus.FAILED, error=str(exc))
    except Exception as exc:
        _logger.exception("lab study %s failed", study.pk)
        storage_tree_delete(prefix=relative)
        job_finish(job=study, status=JobStatus.FAILED, error="".join(traceback.format_exception_only(exc)).strip())
    else:
        files = {name: f"{relative}/{path.name}" for name, path in paths.items()}
        finished = job_finish(
            job=study, status=JobStatus.SUCCEEDED, results=output.results, files=files, out_dir=relative
        )
        if finished.status != JobStatus.SUCCEEDED:  # reaped or cancelled meanwhile: its files are not kept
            storage_tree_delete(prefix=relative)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    study.refresh_from_db()
    return study
