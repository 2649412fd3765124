"""Floor 5: predictions, pool scoring, the active-learning order of the queue, the model opinion (Grad-CAM) and
the inference API. Subscribes to the floors below in InferenceConfig.ready() (services/hooks.py)."""
