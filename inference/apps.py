from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        # Inference sits above annotation and training: it subscribes to what they announce, they never call it.
        # Imported here, not at the top: these modules import models, which are not loaded when apps.py is.
        from annotation.signals import import_batch_finished, labels_finalized
        from inference.services import hooks
        from training.signals import model_version_activated

        import_batch_finished.connect(hooks.on_import_batch_finished, dispatch_uid="inference.queue_after_import")
        labels_finalized.connect(hooks.on_labels_finalized, dispatch_uid="inference.queue_after_final_labels")
        model_version_activated.connect(
            hooks.on_model_version_activated, dispatch_uid="inference.inference_after_activation"
        )
