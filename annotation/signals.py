"""What the labeling floor announces. Higher floors (inference, ...) subscribe in their AppConfig.ready();
annotation itself never imports them."""

from django.dispatch import Signal

# Sent once an import batch has finished successfully and every imported image is committed.
# Keyword arguments: batch (ImportBatch).
import_batch_finished = Signal()

# Sent after a cell's final label has committed (agreement or adjudication); higher floors count them (the queue's
# refresh). No keyword arguments: the label itself is for the receivers to read, never part of the message.
labels_finalized = Signal()
