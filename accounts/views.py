from django.contrib.auth import views as auth_views
from django.shortcuts import render

from annotation.selectors import image_count


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


def home(request):
    return render(request, "accounts/home.html", {"image_count": image_count()})
