"""Training pages under /training/; login is checked by the middleware, roles by the views."""

from django.urls import path

from training import views

app_name = "training"
urlpatterns = [
    path("", views.training_home, name="home"),
    path("start/", views.run_start, name="run_start"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("models/<int:version_id>/", views.model_detail, name="model_detail"),
    path("models/<int:version_id>/activate/", views.model_activate, name="model_activate"),
    path("models/<int:version_id>/plots/<slug:name>.png", views.model_plot, name="model_plot"),
]
