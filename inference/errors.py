"""What the inference floor refuses, as core.errors.AppError subclasses: the API's handler and the pages show them."""

from __future__ import annotations

from core.errors import AppError, Conflict, Unavailable


class NoActiveModel(Conflict):
    """No model version is active yet, so there is nothing to score or explain with."""

    code = "no_active_model"
    message = "No active model yet: an admin activates a trained model version on the Training page."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or type(self).message)


class ModelUnavailable(Unavailable):
    """A version's ensemble cannot be read (files missing or damaged); the message says which."""

    code = "model_unavailable"


class ScoringRefused(Conflict):
    """A rescore cannot start (no active model, another pass still running); the message says why."""

    code = "scoring_refused"


class RefreshRefused(Conflict):
    """A queue refresh cannot be queued now (another one is queued or running)."""

    code = "refresh_refused"


class SelectionRefused(AppError):
    """The selection cannot run as asked (unknown strategy, bad share, a version that is not active)."""

    code = "selection_refused"


class PredictRejected(AppError):
    """The uploads cannot be scored as sent: 400 (bad input) or 413 (a file too large)."""

    code = "invalid_image"
