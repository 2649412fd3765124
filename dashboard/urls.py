"""The dashboard's pages keep their URLs under /annotation/ and their names in the annotation namespace, which
links across the site use: config/urls.py mounts these patterns together with annotation's own."""

from django.urls import path

from dashboard import views

annotation_urlpatterns = [
    path("images/<int:image_id>/", views.image_detail, name="image_detail"),
    path("images/<int:image_id>/reopen/", views.image_reopen, name="image_reopen"),
    path("consensus/", views.consensus, name="consensus"),
]
