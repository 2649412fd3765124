"""Login and the API token page. The home page combines every floor, so it lives on the top one (dashboard/views.py)."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.forms import LoginForm
from accounts.selectors import token_get
from accounts.services.tokens import token_revoke


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@require_http_methods(["GET", "POST"])
def api_token(request):
    """The user's API token: whether there is one, and a button that revokes it (POST)."""
    if request.method == "POST":
        if token_revoke(user=request.user, revoked_by=request.user):
            messages.success(request, "Your API token is revoked: requests that carry it are now refused.")
        return redirect("accounts:api_token")
    return render(request, "accounts/api_token.html", {"token": token_get(user=request.user)})
