"""Inference API routes under /api/inference/."""

from django.urls import path

from inference import api

app_name = "inference_api"
urlpatterns = [
    # Researchers and admins: score uploaded images.
    path("predict/", api.PredictApi.as_view(), name="predict"),
    # Adjudicators, researchers and admins (never annotators): the model's opinion on a stored image.
    path("images/<int:image_id>/opinion/", api.ImageOpinionApi.as_view(), name="image_opinion"),
    path("images/<int:image_id>/similar/", api.ImageSimilarCellsApi.as_view(), name="image_similar"),
    path("images/<int:image_id>/gradcam.png", api.ImageHeatmapApi.as_view(), name="image_gradcam"),
    # Admins: rescore the pool on demand and follow the passes.
    path("scoring/jobs/", api.ScoringJobsApi.as_view(), name="scoring_jobs"),
    path("scoring/jobs/<int:job_id>/", api.ScoringJobApi.as_view(), name="scoring_job"),
]
