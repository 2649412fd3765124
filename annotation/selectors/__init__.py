"""Reads for annotation, one module per concern; the common ones are re-exported here."""

from annotation.selectors.cells import cell_find, cell_get, image_get_for_staff  # noqa: F401
from annotation.selectors.consensus import (  # noqa: F401
    ConsensusItem,
    consensus_count,
    consensus_items,
    consensus_list,
    consensus_next,
)
from annotation.selectors.images import (  # noqa: F401
    IMAGE_STATUS_LABELS,
    ImageStats,
    ImageStatus,
    batch_active_count,
    batch_get,
    batch_items,
    batch_list,
    batch_near_duplicates,
    batch_progress,
    case_list,
    image_count,
    image_file_path,
    image_file_problem_count,
    image_file_problem_list,
    image_get,
    image_list,
    image_stats,
    taxonomy_list,
)
from annotation.selectors.labeling import (  # noqa: F401
    annotation_list_for_image,
    annotation_list_mine,
    image_history,
    labeling_progress,
)
