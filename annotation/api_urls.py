"""Annotation API routes under /api/annotation/."""
from django.urls import path

from annotation import api

app_name = "annotation_api"
urlpatterns = [
    path("taxonomy/", api.TaxonomyListApi.as_view(), name="taxonomy"),
    path("images/", api.ImageListApi.as_view(), name="image_list"),
    path("images/<int:image_id>/", api.ImageDetailApi.as_view(), name="image_detail"),
    path("batches/", api.BatchListApi.as_view(), name="batch_list"),
    path("batches/<int:batch_id>/", api.BatchDetailApi.as_view(), name="batch_detail"),
    path("batches/<int:batch_id>/items/", api.BatchItemListApi.as_view(), name="batch_items"),
    path("batches/<int:batch_id>/progress/", api.BatchProgressApi.as_view(), name="batch_progress"),
]
