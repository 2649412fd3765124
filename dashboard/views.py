"""Pages that combine several floors: the home page (a tile per thing the user's roles allow), the image page
for adjudicators, researchers and admins, and the consensus page, both with the model's opinion and the similar
cells of the index. They keep the URLs they had under /annotation/ (config/urls.py mounts them in the annotation
namespace)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import selectors
from annotation.api.serializers import ConsensusItemOutput
from annotation.forms import ReopenForm
from annotation.models import CellImage, LabelStatus
from annotation.pages import taxonomy_context
from annotation.selectors.blinding import CellHidden, image_hidden_from, image_require_visible
from annotation.services.consensus import label_reopen
from annotation.services.labeling import LabelingError
from cases.selectors import case_count
from core.permissions import role_required
from core.roles import Role, user_has_role
from inference.explain.links import heatmap_url
from inference.explain.opinion import image_opinion_state
from inference.explain.policy import EXPLAIN_ROLES, opinion_visible_to
from inference.selectors import review_list
from inference.services.neighbours import image_similar_cells
from releases.selectors import version_latest
from training.selectors import model_version_active, training_run_current


def home(request):
    user = request.user
    context = {"stats": selectors.image_stats()}
    if user_has_role(user, Role.ADMIN):
        context["active_imports"] = selectors.batch_active_count()
    if user_has_role(user, Role.ANNOTATOR):
        context["progress"] = selectors.labeling_progress(annotator=user)
    if user_has_role(user, Role.ADJUDICATOR, Role.ADMIN):
        context["consensus_waiting"] = selectors.consensus_count(viewer=user)
    if user_has_role(user, Role.RESEARCHER, Role.ADMIN):
        run = training_run_current()
        context.update(
            model_active=model_version_active(),
            run_current=run,
            run_percent=run.percent if run else 0,
            dataset_latest=version_latest(),
        )
    if user_has_role(user, Role.ADJUDICATOR, Role.RESEARCHER, Role.ADMIN):
        # Review rows and case summaries carry model opinions: never computed for annotator-only users.
        context.update(review_waiting=review_list(viewer=user).count(), cases=case_count())
    return render(request, "dashboard/home.html", context)


# --- the image page -------------------------------------------------------------------------------


def _image_detail_context(request, image: CellImage, *, reopen_form: ReopenForm | None = None) -> dict:
    can_reopen = user_has_role(request.user, Role.ADJUDICATOR, Role.ADMIN)
    return (
        {
            "image": image,
            "history": selectors.image_history(image=image),
            "live_labels": selectors.annotation_list_for_image(image=image),
            "can_reopen": can_reopen and image.label_status == LabelStatus.FINAL,
            "reopen_form": reopen_form or ReopenForm(),
        }
        | _model_opinion_context(request, image)
        | _similar_context(request, image)
    )


def _model_opinion_context(request, image: CellImage) -> dict:
    """The model's opinion for those who may see it; for anyone else (annotators) not even an empty panel."""
    if not opinion_visible_to(user=request.user, image=image):
        return {"show_opinion": False}
    state = image_opinion_state(image=image)
    url = heatmap_url(image_id=image.id, opinion=state.opinion) if state.opinion else ""
    return {"show_opinion": True, "opinion_state": state, "heatmap_url": url}


def _similar_context(request, image: CellImage) -> dict:
    """The similar cells with a final class, for those who may see the model's opinion on this cell; for anyone
    else not even an empty panel."""
    if not opinion_visible_to(user=request.user, image=image):
        return {"show_similar": False}
    return {"show_similar": True, "similar": image_similar_cells(image=image, viewer=request.user)}


@require_GET
@role_required(Role.ADMIN, Role.RESEARCHER, Role.ADJUDICATOR)
def image_detail(request, image_id: int):
    image = selectors.image_get(image_id=image_id)
    if image_hidden_from(user=request.user, image=image):
        # The same page for every hidden cell whatever its labels or the model say (annotation.selectors.cells).
        context = {"hidden_message": CellHidden().message}
        return render(request, "dashboard/image_hidden.html", context)
    return render(request, "dashboard/image_detail.html", _image_detail_context(request, image))


@require_POST
@role_required(Role.ADJUDICATOR, Role.ADMIN)
def image_reopen(request, image_id: int):
    """Send a final label back to the consensus queue (a reason is required); PRG back to the image."""
    image = selectors.image_get(image_id=image_id)
    image_require_visible(user=request.user, image=image)  # an invalid form would render the whole page
    form = ReopenForm(request.POST)
    if not form.is_valid():
        context = _image_detail_context(request, image, reopen_form=form)
        return render(request, "dashboard/image_detail.html", context)
    try:
        label_reopen(image_id=image.id, actor=request.user, reason=form.cleaned_data["reason"])
    except LabelingError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Re-opened: the cell is back in the consensus queue.")
    return redirect("annotation:image_detail", image_id=image.id)


# --- the consensus page ---------------------------------------------------------------------------


@require_GET
@role_required(Role.ADJUDICATOR, Role.ADMIN)
def consensus(request):
    """The first cell of the consensus queue with both labels, who gave them and why a re-opened cell is back;
    the page's script records the final class through the API and loads the next one from it. The cell is
    embedded in the API's own shape, so the script shows the first cell and the next ones alike."""
    item = selectors.consensus_next(viewer=request.user)
    context = taxonomy_context() | {
        "item": item,
        "item_data": ConsensusItemOutput(item).data if item else None,
        "waiting": selectors.consensus_count(viewer=request.user),
        "api": {
            "list": reverse("annotation_api:consensus_list"),
            "resolve": reverse("annotation_api:consensus_resolve", kwargs={"image_id": 0}),
            "detail": reverse("annotation:image_detail", kwargs={"image_id": 0}),
            "opinion": reverse("inference_api:image_opinion", kwargs={"image_id": 0}),
            "similar": reverse("inference_api:image_similar", kwargs={"image_id": 0}),
        },
        # Every cell here has both blind labels, so the model's opinion (and the similar cells) can no longer bias a
        # label.
        "show_opinion": user_has_role(request.user, *EXPLAIN_ROLES),
    }
    return render(request, "dashboard/consensus.html", context)
