"""Problems with stored image files: a cell whose file is missing or unreadable is recorded once for admins."""

from __future__ import annotations

import logging

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from annotation.models import CellImage, ImageFileProblem
from core.errors import AppError

_logger = logging.getLogger(__name__)


class ImageFileUnavailable(AppError):
    """410: the cell exists but its pixels cannot be served; the label page offers Skip instead of a label."""

    status = 410
    code = "image_file_unavailable"


def image_file_problem_record(
    *, image: CellImage, reason: ImageFileProblem.Reason, path: str, detail: str = ""
) -> ImageFileProblem:
    """Records the problem the first time it is seen; later requests for the same cell change nothing."""
    try:
        with transaction.atomic():
            problem, created = ImageFileProblem.objects.get_or_create(
                image=image, defaults={"reason": reason, "path": path, "detail": detail[:2000]}
            )
    except IntegrityError:  # two requests for the same broken cell raced; the other one recorded it
        return ImageFileProblem.objects.get(image=image)
    if created:
        _logger.warning("image %s: stored file %s is %s (%s)", image.pk, path, reason, detail)
    return problem


def image_file_problem_recheck() -> int:
    """Forgets the problems whose file storage now serves again (an admin restored it); returns how many."""
    restored = [problem.pk for problem in ImageFileProblem.objects.all() if _readable(problem.path)]
    ImageFileProblem.objects.filter(pk__in=restored).delete()
    return len(restored)


def _readable(path: str) -> bool:
    try:
        with default_storage.open(path, "rb") as handle:
            handle.read(1)
    except OSError:  # FileNotFoundError included: still missing
        return False
    return True
