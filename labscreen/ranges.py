"""Plausible ranges of analyzer parameters: a value outside is flagged on import and kept (a typo or a unit mix-up
is worth a look, but extreme values are exactly what hematologic malignancies produce). Matched on the parameter
name up to its unit, case-insensitively; percentages are 0-100 and counts are not negative whatever their name."""

from __future__ import annotations

import re

AGE_RANGE = (0.0, 120.0)
# Generous limits, in the units a Mindray BC-6800 reports by default.
RANGES = {
    "wbc": (0.0, 1000.0),
    "rbc": (0.0, 10.0),
    "hgb": (10.0, 250.0),  # g/L
    "hct": (0.0, 100.0),
    "mcv": (40.0, 160.0),
    "mch": (10.0, 60.0),
    "mchc": (200.0, 450.0),  # g/L
    "plt": (0.0, 5000.0),
    "mpv": (3.0, 25.0),
}
_NAME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9\-]*?)\s*(?:[#%(]|$)")


def plausible_range(parameter: str) -> tuple[float | None, float | None]:
    """(low, high) for `parameter`; None where there is no limit."""
    low: float | None = None
    high: float | None = None
    match = _NAME.match(parameter)
    key = match.group(1).lower() if match else ""
    if key in RANGES and "%" not in parameter and "#" not in parameter:
        low, high = RANGES[key]
    if "%" in parameter:
        low, high = 0.0, 100.0
    elif "#" in parameter:
        low = 0.0
    if key == "hgb" and "g/dl" in parameter.lower():
        low, high = 1.0, 25.0
    return low, high


def is_plausible(parameter: str, value: float) -> bool:
    low, high = plausible_range(parameter)
    return (low is None or value >= low) and (high is None or value <= high)
