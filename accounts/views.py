"""Login. The home page combines every floor, so it lives on the top one (dashboard/views.py)."""

from django.contrib.auth import views as auth_views


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True
