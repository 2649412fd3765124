"""The URL a page or the API gives for an opinion's Grad-CAM overlay."""

from __future__ import annotations

from django.urls import reverse
from django.utils.http import urlencode

from inference.explain.opinion import ModelOpinion


def heatmap_url(*, image_id: int, opinion: ModelOpinion) -> str:
    """The overlay's URL for the opinion's top class. The version in the query makes a newly activated model a new
    URL, so a browser never shows a map it cached from the previous one."""
    query = urlencode({"class": opinion.predicted.code, "version": opinion.model_version_id})
    return f"{reverse('inference_api:image_gradcam', kwargs={'image_id': image_id})}?{query}"
