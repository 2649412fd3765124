from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotation import urls as annotation_urls
from core.views import healthz, readyz
from dashboard import urls as dashboard_urls
from dashboard.views import home

urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz),
    path("readyz", readyz),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    # One namespace for every page under /annotation/, whichever floor serves it.
    path("annotation/", include((dashboard_urls.annotation_urlpatterns + annotation_urls.urlpatterns, "annotation"))),
    path("releases/", include("releases.urls")),
    path("training/", include("training.urls")),
    path("inference/", include("inference.urls")),
    path("cases/", include("cases.urls")),
    path("labscreen/", include("labscreen.urls")),
    path("api/accounts/", include("accounts.api_urls")),
    path("api/annotation/", include("annotation.api_urls")),
    path("api/releases/", include("releases.api_urls")),
    path("api/training/", include("training.api_urls")),
    path("api/inference/", include("inference.api_urls")),
    path("api/labscreen/", include("labscreen.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
