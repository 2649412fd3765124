"""Annotation pages; every one needs login (middleware) and a role (views)."""

from django.urls import path

from annotation import views

app_name = "annotation"
urlpatterns = [
    path("images/", views.image_list, name="image_list"),
    path("images/<int:image_id>/", views.image_detail, name="image_detail"),
    path("images/<int:image_id>/reopen/", views.image_reopen, name="image_reopen"),
    path("images/<int:image_id>/file", views.image_file, name="image_file"),
    path("images/<int:image_id>/thumb", views.image_thumbnail, name="image_thumbnail"),
    path("imports/", views.batch_list, name="batch_list"),
    path("imports/new/", views.batch_create, name="batch_create"),
    path("imports/<int:batch_id>/", views.batch_detail, name="batch_detail"),
    path("label/", views.label, name="label"),
    path("consensus/", views.consensus, name="consensus"),
    path("agreement/", views.agreement, name="agreement"),
]
