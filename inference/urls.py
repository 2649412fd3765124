"""Active-learning pages under /inference/ (the JSON progress endpoint serves the pages' polling)."""

from django.urls import path

from inference import views

app_name = "inference"
urlpatterns = [
    path("scoring/", views.scoring, name="scoring"),
    path("scoring/rescore/", views.rescore, name="rescore"),
    path("scoring/jobs/<int:job_id>/progress/", views.scoring_progress, name="scoring_progress"),
    path("scoring/refresh/", views.refresh, name="refresh"),
    path("scoring/index/<int:job_id>/progress/", views.index_progress, name="index_progress"),
    path("scoring/refreshes/<int:job_id>/progress/", views.refresh_progress, name="refresh_progress"),
    path("review/", views.review, name="review"),
    path("settings/", views.al_settings, name="settings"),
    path("settings/apply/", views.priorities_apply, name="priorities_apply"),
]
