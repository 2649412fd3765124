from django.urls import path

from annotation import views

app_name = "annotation"
urlpatterns = [
    path("images/", views.image_list, name="image_list"),
    path("imports/", views.batch_list, name="batch_list"),
]
