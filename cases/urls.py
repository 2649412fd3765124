"""Case summary pages under /cases/ (and their JSON for scripts and the pages' API users)."""

from django.urls import path

from cases import views

app_name = "cases"
urlpatterns = [
    path("", views.case_list, name="case_list"),
    path("<int:case_id>/", views.case_detail, name="case_detail"),
    path("<int:case_id>/summary.json", views.case_summary_json, name="case_summary_json"),
]
