"""Template helpers for the labeling, consensus and agreement pages."""

from __future__ import annotations

from django import template

from annotation import selectors
from annotation.models import FinalMethod
from core.roles import Role, user_has_role

register = template.Library()

# Landis & Koch (1977), the bands clinicians quote for Cohen's kappa: (upper bound, name, css class).
KAPPA_BANDS = (
    (0.20, "Slight", "slight"),
    (0.40, "Fair", "fair"),
    (0.60, "Moderate", "moderate"),
    (0.80, "Substantial", "substantial"),
    (1.00, "Almost perfect", "perfect"),
)


def kappa_band(kappa: float | None) -> tuple[str, str]:
    """(interpretation, css class): below 0 poor, 0-0.20 slight, 0.21-0.40 fair, ... 0.81-1 almost perfect."""
    if kappa is None:
        return "Not defined", "none"
    if kappa < 0:
        return "Poor", "poor"
    for upper, name, css in KAPPA_BANDS:
        if kappa <= upper:
            return name, css
    return KAPPA_BANDS[-1][1:]


@register.filter
def kappa_label(kappa: float | None) -> str:
    return kappa_band(kappa)[0]


@register.filter
def kappa_css(kappa: float | None) -> str:
    return kappa_band(kappa)[1]


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.8123 -> '81.2 %'; None -> '—'."""
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f} %"


@register.filter
def ratio_width(value: float | None) -> str:
    """A 0..1 ratio as a CSS width percentage for the inline bars."""
    if value is None:
        return "0"
    return f"{max(0.0, min(1.0, value)) * 100:.1f}"


FINAL_METHODS = {
    FinalMethod.AGREEMENT: "by agreement",
    FinalMethod.ADJUDICATED: "adjudicated",
    FinalMethod.TRUSTED_IMPORT: "trusted import",
}


@register.filter
def final_method_label(method: str) -> str:
    return FINAL_METHODS.get(method, method.replace("_", " "))


@register.filter
def seconds(milliseconds: int | None) -> str:
    """Labeling time for people: 3456 -> '3.5 s', 125000 -> '2 min 5 s'."""
    if milliseconds is None:
        return "—"
    if milliseconds < 60_000:
        return f"{milliseconds / 1000:.1f} s"
    minutes, rest = divmod(round(milliseconds / 1000), 60)
    return f"{minutes} min {rest} s"


@register.simple_tag(takes_context=True)
def consensus_waiting(context) -> int | None:
    """Cells waiting for an adjudicator, for the nav badge; None for users who cannot resolve them."""
    request = context.get("request")
    if request is None or not user_has_role(request.user, Role.ADJUDICATOR, Role.ADMIN):
        return None
    return selectors.consensus_count(viewer=request.user)


@register.simple_tag(takes_context=True)
def image_file_problems(context) -> int | None:
    """Cells whose file could not be served, for the admins' nav link; None for everyone else."""
    request = context.get("request")
    if request is None or not user_has_role(request.user, Role.ADMIN):
        return None
    return selectors.image_file_problem_count()
