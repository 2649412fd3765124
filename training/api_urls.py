"""Training API routes under /api/training/."""

from django.urls import path

from training import api

app_name = "training_api"
urlpatterns = [
    path("runs/", api.RunListStartApi.as_view(), name="run_list"),
    path("weights/", api.WeightsPlanApi.as_view(), name="weights_plan"),
    path("runs/<int:run_id>/", api.RunDetailApi.as_view(), name="run_detail"),
    path("runs/<int:run_id>/cancel/", api.RunCancelApi.as_view(), name="run_cancel"),
    path("models/", api.ModelVersionListApi.as_view(), name="model_list"),
    path("models/<int:version_id>/", api.ModelVersionDetailApi.as_view(), name="model_detail"),
    path("models/<int:version_id>/activate/", api.ModelVersionActivateApi.as_view(), name="model_activate"),
]
