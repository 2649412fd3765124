"""Geometry of the case page's bar chart (final labels vs model, % of white cells per class), drawn as inline SVG
by the template: no image files, no plotting library in the request."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cases.selectors import CaseSummary

LABEL_WIDTH = 150
PLOT_WIDTH = 440
ROW_HEIGHT = 30
BAR_HEIGHT = 11
TOP = 28


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    percent: float
    text_x: float


@dataclass(frozen=True)
class ChartRow:
    name: str
    y: float  # text baseline of the class name
    label: Bar
    model: Bar | None
    is_blast: bool


def differential_chart(*, summary: CaseSummary) -> dict:
    """Rows of bars plus the axis ticks and the SVG size; the scale's end is the largest percentage rounded up
    to a multiple of 10, so small differentials stay readable."""
    model_rows = summary.by_model.rows if summary.by_model else [None] * len(summary.by_label.rows)
    largest = max(
        [row.percent or 0.0 for row in summary.by_label.rows] + [row.percent or 0.0 for row in model_rows if row]
    )
    scale_max = max(10, 10 * math.ceil(largest / 10))

    def bar(percent: float | None, y: float) -> Bar:
        width = PLOT_WIDTH * (percent or 0.0) / scale_max
        return Bar(y=y, width=round(width, 1), percent=percent or 0.0, text_x=round(LABEL_WIDTH + width + 4, 1))

    rows = []
    for index, (label_row, model_row) in enumerate(zip(summary.by_label.rows, model_rows, strict=True)):
        top = TOP + index * ROW_HEIGHT
        rows.append(
            ChartRow(
                name=label_row.name,
                y=top + BAR_HEIGHT + 3,
                label=bar(label_row.percent, top + 2),
                model=bar(model_row.percent, top + 2 + BAR_HEIGHT) if model_row else None,
                is_blast=label_row.code in ("myeloblast", "lymphoblast"),
            )
        )
    ticks = [
        {"x": round(LABEL_WIDTH + PLOT_WIDTH * value / scale_max, 1), "value": value}
        for value in range(0, scale_max + 1, max(10, scale_max // 5))
    ]
    height = TOP + len(rows) * ROW_HEIGHT + 8
    return {
        "rows": rows,
        "ticks": ticks,
        "width": LABEL_WIDTH + PLOT_WIDTH + 60,
        "height": height,
        "plot_left": LABEL_WIDTH,
        "plot_bottom": height - 8,
    }
