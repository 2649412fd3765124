"""Annotation pages; every one needs login (middleware) and a role (views). The image page, its re-open form and
the consensus page share this namespace but live in dashboard/urls.py."""

from django.urls import path

from annotation import views

app_name = "annotation"
urlpatterns = [
    path("images/", views.image_list, name="image_list"),
    path("images/unavailable/", views.image_file_problems, name="image_file_problems"),
    path("images/<int:image_id>/file", views.image_file, name="image_file"),
    path("images/<int:image_id>/thumb", views.image_thumbnail, name="image_thumbnail"),
    path("imports/", views.batch_list, name="batch_list"),
    path("imports/new/", views.batch_create, name="batch_create"),
    path("imports/<int:batch_id>/", views.batch_detail, name="batch_detail"),
    path("label/", views.label, name="label"),
    path("agreement/", views.agreement, name="agreement"),
]
