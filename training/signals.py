"""What the training floor announces. Inference subscribes in its AppConfig.ready(); training never imports it."""

from django.dispatch import Signal

# Sent when a model version has become the active one (activation or rollback), after the change commits.
# Keyword arguments: model_version (ModelVersion).
model_version_activated = Signal()
