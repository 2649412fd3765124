"""The outcome of a case from its ICD-10 code, by the admin-edited OutcomeRule rows."""

from __future__ import annotations

import re

from labscreen.models import Outcome, OutcomeRule

_CODE = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z]{0,4}$")


def icd10_normalise(code: str) -> str:
    """'c92.0 ' -> 'C920'; '' when it does not look like an ICD-10 code."""
    cleaned = code.strip().upper().replace(".", "")
    return cleaned if _CODE.match(cleaned) else ""


def outcome_for_icd10(code: str, *, rules: list[OutcomeRule] | None = None) -> str:
    """Malignant or non-malignant: the rule with the longest matching start wins, no rule means non-malignant."""
    normalised = icd10_normalise(code)
    if not normalised:
        return ""
    rules = list(OutcomeRule.objects.all()) if rules is None else rules
    best: OutcomeRule | None = None
    for rule in rules:
        start, end = icd10_normalise(rule.start), icd10_normalise(rule.end)
        if not start or not end:
            continue
        width = len(start)
        if start <= normalised[:width] <= end[:width] and (best is None or width > len(icd10_normalise(best.start))):
            best = rule
    return best.outcome if best else Outcome.NON_MALIGNANT
