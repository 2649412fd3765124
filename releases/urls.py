"""Releases pages (researchers and admins); login is checked by the middleware, roles by the views."""

from django.urls import path

from releases import views

app_name = "releases"
urlpatterns = [
    path("", views.version_list, name="version_list"),
    path("new/", views.version_create, name="version_create"),
    path("diff/", views.version_diff, name="version_diff"),
    path("v<int:number>/", views.version_detail, name="version_detail"),
    path("v<int:number>/archive/", views.archive_build, name="archive_build"),
    path("v<int:number>/download/", views.archive_download, name="archive_download"),
]
