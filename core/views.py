"""Operations endpoints for load balancers and orchestrators; public, like the login page, and never cached."""

from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from core.health import readiness_check


@never_cache
def healthz(request):
    """The web process answers: nothing else is checked, so a restart loop never hangs on a slow database."""
    return HttpResponse("ok", content_type="text/plain")


@never_cache
def readyz(request):
    """The database, Redis, storage and a worker per queue, as JSON; 503 while any is missing."""
    readiness = readiness_check()
    return JsonResponse(readiness.as_json(), status=200 if readiness.ready else 503)
