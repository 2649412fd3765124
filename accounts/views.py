"""Login and the home page with one tile per thing the user's roles allow."""

from django.contrib.auth import views as auth_views
from django.shortcuts import render

from annotation.selectors import batch_active_count, consensus_count, image_stats, labeling_progress
from cases.selectors import case_count
from core.roles import Role, user_has_role
from inference.selectors import review_list
from releases.selectors import version_latest
from training.selectors import model_version_active, training_run_current, training_run_percent


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


def home(request):
    user = request.user
    context = {"stats": image_stats()}
    if user_has_role(user, Role.ADMIN):
        context["active_imports"] = batch_active_count()
    if user_has_role(user, Role.ANNOTATOR):
        context["progress"] = labeling_progress(annotator=user)
    if user_has_role(user, Role.ADJUDICATOR, Role.ADMIN):
        context["consensus_waiting"] = consensus_count()
    if user_has_role(user, Role.RESEARCHER, Role.ADMIN):
        run = training_run_current()
        context.update(
            model_active=model_version_active(),
            run_current=run,
            run_percent=training_run_percent(run=run) if run else 0,
            dataset_latest=version_latest(),
        )
    if user_has_role(user, Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN):
        # Review rows and case summaries carry model opinions: never computed for annotator-only users.
        context.update(review_waiting=review_list().count(), cases=case_count())
    return render(request, "accounts/home.html", context)
