"""Login and the home page with one tile per thing the user's roles allow."""
from django.contrib.auth import views as auth_views
from django.shortcuts import render

from accounts.roles import Role, user_has_role
from annotation.selectors import batch_active_count, consensus_count, image_stats, labeling_progress


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


def home(request):
    context = {"stats": image_stats()}
    if user_has_role(request.user, Role.ADMIN):
        context["active_imports"] = batch_active_count()
    if user_has_role(request.user, Role.ANNOTATOR):
        context["progress"] = labeling_progress(annotator=request.user)
    if user_has_role(request.user, Role.ADJUDICATOR, Role.ADMIN):
        context["consensus_waiting"] = consensus_count()
    return render(request, "accounts/home.html", context)
