"""Lab-screen pages under /labscreen/; login is checked by the middleware, roles by the views."""

from django.urls import path

from labscreen import views

app_name = "labscreen"
urlpatterns = [
    path("", views.home, name="home"),
    path("imports/", views.import_create, name="import_create"),
    path("imports/<int:import_id>/", views.import_detail, name="import_detail"),
    path("studies/", views.study_start, name="study_start"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/cancel/", views.study_cancel, name="study_cancel"),
    path("studies/<int:study_id>/activate/", views.study_activate, name="study_activate"),
    path("studies/<int:study_id>/files/<slug:name>", views.study_file, name="study_file"),
]
