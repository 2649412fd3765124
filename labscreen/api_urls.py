"""Lab-screen API routes under /api/labscreen/."""

from django.urls import path

from labscreen import api

app_name = "labscreen_api"
urlpatterns = [
    path("studies/<int:study_id>/", api.LabStudyDetailApi.as_view(), name="study_detail"),
]
