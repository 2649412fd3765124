"""What the labeling floor announces. Higher floors (inference, ...) subscribe in their AppConfig.ready();
annotation itself never imports them."""

from django.dispatch import Signal

# Sent once an import batch has finished successfully and every imported image is committed.
# Keyword arguments: batch (ImportBatch).
import_batch_finished = Signal()
