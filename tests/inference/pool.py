"""Building a pool through the real import and labeling services, for the index and queue tests."""

from __future__ import annotations

from annotation.models import CellClass, CellImage
from annotation.services.imports.batches import import_batch_create
from annotation.services.imports.runner import import_batch_process
from annotation.services.labeling import annotation_submit
from tests.factories.annotation import hold
from tests.helpers import cell_png


def folder(root, counts: dict[str, int], *, start: int = 50_000):
    """One subfolder per case with `count` distinct synthetic cells each (variants from `start` on)."""
    variant = start
    for case, count in counts.items():
        (root / case).mkdir(parents=True)
        for n in range(count):
            variant += 1
            (root / case / f"cell_{n}.png").write_bytes(cell_png(variant=variant))
    return root


def import_folder(admin_user, source):
    """An unlabeled import of `source`, cases from the folder names, run in this process."""
    batch = import_batch_create(
        created_by=admin_user, source=source, source_name="cells", case_from_folder=True, enqueue=False
    )
    return import_batch_process(batch=batch)


def label_to_final(image: CellImage, code: str, annotators) -> None:
    """Every annotator labels `image` as `code` (two agreeing make it final)."""
    cell_class = CellClass.objects.get(code=code)
    for annotator in annotators:
        hold(image=image, annotator=annotator)
        annotation_submit(image_id=image.id, annotator=annotator, cell_class=cell_class)


def queue_order() -> list[int]:
    """The image ids with a priority, first in the queue first."""
    return list(CellImage.objects.filter(priority__gt=0).order_by("-priority", "id").values_list("id", flat=True))
