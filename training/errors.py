"""What the training floor refuses, as core.errors.AppError subclasses: the API's handler and the pages show them."""

from __future__ import annotations

from core.errors import AppError, Conflict


class TrainingRefused(AppError):
    """The request cannot be carried out as asked (bad version, bad profile, finished run): 400."""

    code = "training_refused"


class TrainingBusy(TrainingRefused, Conflict):
    """Another run is queued or running; only one trains at a time: 409."""

    status = 409
    code = "training_busy"
