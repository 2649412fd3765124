"""Case pages: the list of cases sortable by blast fraction, and one case's differential counts and chart.
Final labels and model predictions are on them, so annotators (who label blind) never open them."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cases import selectors
from cases.charts import differential_chart
from core.permissions import role_required
from core.roles import Role
from labscreen.selectors import case_lab

CASE_ROLES = (Role.RESEARCHER, Role.ADJUDICATOR, Role.ADMIN)
CASES_PER_PAGE = 50


@require_GET
@role_required(*CASE_ROLES)
def case_list(request):
    sort = request.GET.get("sort", selectors.DEFAULT_SORT)
    if sort not in selectors.SORTS:
        sort = selectors.DEFAULT_SORT
    cases = selectors.case_list(sort=sort, viewer=request.user)
    page = Paginator(cases, CASES_PER_PAGE).get_page(request.GET.get("page"))
    rows = [(case, *selectors.case_list_flags(case)) for case in page]
    return render(request, "cases/case_list.html", {"page": page, "rows": rows, "sort": sort, "section": "cases"})


def _case_or_404(case_id: int):
    case = selectors.case_get(case_id=case_id)
    if case is None:
        raise Http404("No such case.")
    return case


@require_GET
@role_required(*CASE_ROLES)
def case_detail(request, case_id: int):
    summary = selectors.case_summary(case=_case_or_404(case_id), viewer=request.user)
    model_rows = summary.by_model.rows if summary.by_model else [None] * len(summary.by_label.rows)
    context = {
        "summary": summary,
        "rows": list(zip(summary.by_label.rows, model_rows, strict=True)),
        "chart": differential_chart(summary=summary),
        "lab": case_lab(case=summary.case, viewer=request.user),
        "section": "cases",
    }
    return render(request, "cases/case_detail.html", context)


@require_GET
@role_required(*CASE_ROLES)
def case_summary_json(request, case_id: int):
    summary = selectors.case_summary(case=_case_or_404(case_id), viewer=request.user)
    return JsonResponse(
        {
            "case": {"id": summary.case.pk, "code": summary.case.code, "diagnosis": summary.case.diagnosis},
            "images": summary.images,
            "labeled": summary.labeled,
            "unlabeled": summary.unlabeled,
            "by_final_label": summary.by_label.as_dict(),
            "model_version": summary.model_version.pk if summary.model_version else None,
            "by_model": summary.by_model.as_dict() if summary.by_model else None,
            "blast_threshold": float(selectors.BLAST_THRESHOLD),
            "lab_screen": case_lab(case=summary.case, viewer=request.user).as_dict(),
            "notice": "Decision support, not a diagnosis.",
        }
    )
